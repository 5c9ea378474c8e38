from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExplainRequest(_message.Message):
    __slots__ = ("token", "claims", "gateway_type", "method", "path", "headers")
    class HeadersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_TYPE_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    token: str
    claims: _struct_pb2.Struct
    gateway_type: str
    method: str
    path: str
    headers: _containers.ScalarMap[str, str]
    def __init__(self, token: _Optional[str] = ..., claims: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., gateway_type: _Optional[str] = ..., method: _Optional[str] = ..., path: _Optional[str] = ..., headers: _Optional[_Mapping[str, str]] = ...) -> None: ...

class StageTrace(_message.Message):
    __slots__ = ("stage", "outcome", "code", "detail", "data")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stage: str
    outcome: str
    code: str
    detail: str
    data: _struct_pb2.Struct
    def __init__(self, stage: _Optional[str] = ..., outcome: _Optional[str] = ..., code: _Optional[str] = ..., detail: _Optional[str] = ..., data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("route_id", "allowed", "status", "stages", "config_revision", "policy_revision")
    ROUTE_ID_FIELD_NUMBER: _ClassVar[int]
    ALLOWED_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    route_id: str
    allowed: bool
    status: int
    stages: _containers.RepeatedCompositeFieldContainer[StageTrace]
    config_revision: str
    policy_revision: str
    def __init__(self, route_id: _Optional[str] = ..., allowed: _Optional[bool] = ..., status: _Optional[int] = ..., stages: _Optional[_Iterable[_Union[StageTrace, _Mapping]]] = ..., config_revision: _Optional[str] = ..., policy_revision: _Optional[str] = ...) -> None: ...

class BudgetRequest(_message.Message):
    __slots__ = ("subject", "plan")
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    subject: str
    plan: str
    def __init__(self, subject: _Optional[str] = ..., plan: _Optional[str] = ...) -> None: ...

class BudgetWindow(_message.Message):
    __slots__ = ("metric", "window", "used", "limit", "remaining", "resets_in_seconds")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    RESETS_IN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    window: str
    used: int
    limit: int
    remaining: int
    resets_in_seconds: int
    def __init__(self, metric: _Optional[str] = ..., window: _Optional[str] = ..., used: _Optional[int] = ..., limit: _Optional[int] = ..., remaining: _Optional[int] = ..., resets_in_seconds: _Optional[int] = ...) -> None: ...

class BudgetResponse(_message.Message):
    __slots__ = ("windows",)
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    windows: _containers.RepeatedCompositeFieldContainer[BudgetWindow]
    def __init__(self, windows: _Optional[_Iterable[_Union[BudgetWindow, _Mapping]]] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("applied", "config_revision", "policy_revision", "error")
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    CONFIG_REVISION_FIELD_NUMBER: _ClassVar[int]
    POLICY_REVISION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    applied: bool
    config_revision: str
    policy_revision: str
    error: str
    def __init__(self, applied: _Optional[bool] = ..., config_revision: _Optional[str] = ..., policy_revision: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...
