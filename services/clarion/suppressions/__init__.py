"""Suppressions: the addresses a project does not send to (store.py), SuppressionService (servicer.py), and the
accept's lookup of a recipient (clarion.notifications.servicer asks store.suppressed before it plans)."""
