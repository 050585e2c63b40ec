"""What providers report after they accepted a message: SendGrid's signed Event Webhook (sendgrid.py: the signature
and the events' format), the statements that keep each event once and apply it to its delivery and to the
suppression list (store.py), and ProviderEventService (servicer.py)."""
