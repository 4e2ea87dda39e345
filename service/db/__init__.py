from service.db.base import Base
from service.db.tables import (
    ActionJob,
    ApiToken,
    AuditEvent,
    Certificate,
    DataSubject,
    ErasureRequest,
    Job,
    MlModel,
    ModelVersion,
    RequestAction,
    TrainingRecord,
)

__all__ = [
    "ActionJob",
    "ApiToken",
    "AuditEvent",
    "Base",
    "Certificate",
    "DataSubject",
    "ErasureRequest",
    "Job",
    "MlModel",
    "ModelVersion",
    "RequestAction",
    "TrainingRecord",
]
