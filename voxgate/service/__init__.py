"""The service layer: the typed :class:`~voxgate.service.runtime.Runtime` and the use cases every door
shares (enroll from recordings or a stream, verify, webhooks, maintenance). No web framework in here:
outcomes carry no HTTP status; ``voxgate.api`` translates them (a test guards the imports)."""
