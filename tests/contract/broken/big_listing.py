"""Not broken: 20,000 messages with 70-character uids, so that the list
and uidl bodies are larger than 1 MiB (about 1.9 and 1.5 MB). The gateway
takes them with its default max_messages (1 MiB plus 128 octets per
entry); the checker must pass them too, and refuse them with
--max-messages=1000, where the gateway would."""
import base

COUNT = 20000


class BigListing(base.Backend):
    def __init__(self):
        super().__init__()
        first = self.messages
        self.messages = [("%06d-%s" % (i, "u" * 63), b"Subject: n\n\nbody %d\n" % i)
                         for i in range(COUNT - len(first))]
        self.messages += [("%06d-%s" % (COUNT - len(first) + i, "v" * 63), data)
                          for i, (_, data) in enumerate(first)]


base.serve(BigListing())
