"""The in-app inbox: its store (store.py), the live fan-out of changes to watchers (hub.py) and InboxService
(servicer.py). The in-app channel (clarion.delivery.channels.in_app) writes messages through the store; the user
tokens end users reach their inbox with are clarion.keys.user_tokens'."""
