"""Session set-up shared by the test modules."""

# submitit configures logging when first imported (logging.config.dictConfig), which closes every
# existing handler. absl's handler (imported by rliable in the report tests) holds pytest's capture
# stream, and closing it mid-session breaks pytest's output. Importing submitit first, before any
# handler exists, keeps the reconfiguration harmless.
import submitit  # noqa: F401
