from service.audit.chain import (
    GENESIS_HASH,
    ChainVerification,
    append_event,
    lock_audit_chain,
    verify_chain,
)

__all__ = [
    "GENESIS_HASH",
    "ChainVerification",
    "append_event",
    "lock_audit_chain",
    "verify_chain",
]
