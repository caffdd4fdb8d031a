"""Broken: quit answers 500, so no client ever gets its deletions committed
(and every QUIT with nothing to delete is an error in the backend's logs)."""
import base


class Quit500(base.Backend):
    def quit(self, req):
        return 500, {"error": "quit is broken"}


base.serve(Quit500())
