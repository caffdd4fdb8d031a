"""Broken: quit fails when a message to delete is already gone, so a
retried quit (same webhook-id) fails although the deletion happened."""
import base


class NotIdempotent(base.Backend):
    def delete(self, uid):
        if uid not in [u for u, _ in self.messages]:
            return 500
        return super().delete(uid)


base.serve(NotIdempotent())
