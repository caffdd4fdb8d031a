"""Broken: two messages share a uid (uids must be unique in a maildrop)."""
import base


class DuplicateUids(base.Backend):
    def listing(self):
        out = super().listing()
        out[2]["uid"] = out[0]["uid"]
        return out


base.serve(DuplicateUids())
