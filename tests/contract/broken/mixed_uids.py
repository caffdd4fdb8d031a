"""Broken: only some entries of the listing carry a uid (uids are all or
none)."""
import base


class MixedUids(base.Backend):
    def listing(self):
        out = super().listing()
        del out[1]["uid"]
        return out

    def uids(self):
        return [uid for uid, _ in self.messages]  # uidl itself is fine


base.serve(MixedUids())
