"""Choosing and building the providers from the settings, failing at start with a message naming the variable.

Provider modules are imported only when chosen: local mode never loads sendgrid or firebase-admin.
"""

from __future__ import annotations

from email.headerregistry import Address

from clarion.core.config import Settings, SettingsError
from clarion.core.logging import get_logger
from clarion.delivery.providers.base import EmailProvider, PushProvider, SmsProvider
from clarion.delivery.providers.mime import parse_mailbox

log = get_logger(__name__)


def email_provider_name(settings: Settings) -> str:
    """The email provider the settings select: "auto" is SendGrid with a key, else SMTP with a host, else file."""
    if settings.email_provider != "auto":
        return settings.email_provider
    if settings.sendgrid_api_key and settings.sendgrid_api_key.get_secret_value():
        return "sendgrid"
    if settings.smtp_host:
        return "smtp"
    return "file"


def create_email_providers(settings: Settings) -> list[EmailProvider]:
    """The email providers in order of preference: CLARION_EMAIL_PROVIDERS, or the one email_provider_name
    selects. Raises SettingsError when one's settings are missing or inconsistent."""
    names = settings.email_providers.split(",") if settings.email_providers else [email_provider_name(settings)]
    return [create_email_provider(settings, name) for name in names]


def create_email_provider(settings: Settings, name: str | None = None) -> EmailProvider:
    """The email provider `name` (default: the one the settings select). Raises SettingsError when its settings are
    missing or inconsistent."""
    name = name or email_provider_name(settings)
    sender = _sender(settings)
    provider: EmailProvider
    if name == "sendgrid":
        from clarion.delivery.providers.sendgrid import SendGridProvider

        key = settings.sendgrid_api_key.get_secret_value() if settings.sendgrid_api_key else ""
        if not key:
            raise SettingsError("CLARION_SENDGRID_API_KEY must be set to send email through SendGrid")
        provider = SendGridProvider(
            api_key=key, sender=sender, host=settings.sendgrid_host, timeout_s=settings.provider_timeout_s
        )
    elif name == "smtp":
        from clarion.delivery.providers.smtp import SmtpProvider

        if not settings.smtp_host:
            raise SettingsError("CLARION_SMTP_HOST must be set to send email through SMTP")
        if settings.smtp_starttls and settings.smtp_use_tls:
            raise SettingsError(
                "CLARION_SMTP_STARTTLS and CLARION_SMTP_USE_TLS are both true: choose STARTTLS (port 587) or "
                "implicit TLS (port 465); set CLARION_SMTP_STARTTLS=false for the latter"
            )
        provider = SmtpProvider(
            host=settings.smtp_host,
            port=settings.smtp_port,
            sender=sender,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            starttls=settings.smtp_starttls,
            use_tls=settings.smtp_use_tls,
            ca_file=settings.smtp_ca_file,
            timeout_s=settings.provider_timeout_s,
        )
    else:
        from clarion.delivery.providers.file import FileProvider

        provider = FileProvider(outbox_dir=settings.outbox_dir or settings.data_dir / "outbox", sender=sender)
    log.info("email_provider_selected", provider=provider.name)
    return provider


def create_push_provider(settings: Settings) -> PushProvider:
    """FCM when a service-account file is set, else the simulated provider. Raises SettingsError for a file that
    cannot be read as a service account."""
    provider: PushProvider
    if settings.fcm_credentials_file is None:
        from clarion.delivery.providers.simulated import SimulatedPushProvider

        provider = SimulatedPushProvider()
    else:
        from clarion.delivery.providers.fcm import FcmProvider

        try:
            provider = FcmProvider(
                credentials_file=settings.fcm_credentials_file,
                timeout_s=settings.provider_timeout_s,
                fcm_url=settings.fcm_url,
            )
        except (OSError, ValueError) as exc:
            # firebase-admin's messages name the file and the problem, never the key inside.
            raise SettingsError(f"CLARION_FCM_CREDENTIALS_FILE: not a usable service-account file: {exc}") from None
    log.info("push_provider_selected", provider=provider.name, simulated=provider.simulated)
    return provider


def create_sms_provider(settings: Settings) -> SmsProvider:
    """Twilio when chosen (or "auto" with an account SID), else JSON files in the outbox, or the simulated provider.
    Raises SettingsError naming every Twilio variable that is missing."""
    name = settings.sms_provider
    if name == "auto":
        name = "twilio" if settings.twilio_account_sid else "file"
    provider: SmsProvider
    if name == "twilio":
        from clarion.delivery.providers.twilio import TwilioProvider

        token = settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else ""
        missing = [
            variable
            for variable, value in (
                ("CLARION_TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
                ("CLARION_TWILIO_AUTH_TOKEN", token),
            )
            if not value
        ]
        if not settings.twilio_from_number and not settings.twilio_messaging_service_sid:
            missing.append("CLARION_TWILIO_FROM_NUMBER or CLARION_TWILIO_MESSAGING_SERVICE_SID")
        if missing:
            raise SettingsError(
                "; ".join(f"{variable} must be set" for variable in missing) + " to send SMS through Twilio"
            )
        provider = TwilioProvider(
            account_sid=settings.twilio_account_sid or "",
            auth_token=token,
            from_number=settings.twilio_from_number or "",
            messaging_service_sid=settings.twilio_messaging_service_sid or "",
            base_url=settings.twilio_base_url,
            timeout_s=settings.provider_timeout_s,
        )
    elif name == "simulated":
        from clarion.delivery.providers.sms_local import SimulatedSmsProvider

        provider = SimulatedSmsProvider()
    else:
        from clarion.delivery.providers.sms_local import FileSmsProvider

        provider = FileSmsProvider(outbox_dir=settings.outbox_dir or settings.data_dir / "outbox")
    log.info("sms_provider_selected", provider=provider.name)
    return provider


def _sender(settings: Settings) -> Address:
    try:
        return parse_mailbox(settings.email_from, what="CLARION_EMAIL_FROM")
    except ValueError as exc:
        raise SettingsError(str(exc)) from None
