"""Not broken: retrieve answers in the JSON form, {"content_base64": ...}
(the stored bytes, base64). The checker must pass it."""
import base64

import base


class JsonContent(base.Backend):
    def retrieve(self, req):
        status, result = super().retrieve(req)
        if status == 200:
            return 200, {"content_base64": base64.b64encode(result).decode()}
        return status, result


base.serve(JsonContent())
