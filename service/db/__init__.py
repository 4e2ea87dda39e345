from service.db.base import Base
from service.db.tables import (
    ActionJob,
    ApiToken,
    AuditEvent,
    CalibrationRecord,
    Certificate,
    DataSubject,
    ErasureRequest,
    Job,
    MlModel,
    ModelVersion,
    RequestAction,
    RuleSetVersion,
    TrainingRecord,
)

__all__ = [
    "ActionJob",
    "ApiToken",
    "AuditEvent",
    "Base",
    "CalibrationRecord",
    "Certificate",
    "DataSubject",
    "ErasureRequest",
    "Job",
    "MlModel",
    "ModelVersion",
    "RequestAction",
    "RuleSetVersion",
    "TrainingRecord",
]
