"""Zodiac Roles v2.1 permission types, shared by the planner (which writes a role) and the
collector (which reads one back): the ``ConditionFlat`` tree of a scoped function, an allowance,
and the state of a role as installed on the chain.

Enum values are Roles v2.1's (``zodiac-roles-deployments``: ``ParameterType``, ``Operator``,
``ExecutionOptions``). A ``ConditionFlat`` list is the condition tree in breadth-first order;
each node names its parent by index and the root is its own parent (index 0)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

MULTISEND_SELECTOR = bytes.fromhex("8d80ff0a")  # multiSend(bytes)


class ParamType(IntEnum):
    NONE = 0
    STATIC = 1
    DYNAMIC = 2
    TUPLE = 3
    ARRAY = 4
    CALLDATA = 5
    ABI_ENCODED = 6


class Operator(IntEnum):
    PASS = 0
    AND = 1
    OR = 2
    NOR = 3
    MATCHES = 5
    ARRAY_SOME = 6
    ARRAY_EVERY = 7
    ARRAY_SUBSET = 8
    EQUAL_TO_AVATAR = 15
    EQUAL_TO = 16
    GREATER_THAN = 17
    LESS_THAN = 18
    SIGNED_INT_GREATER_THAN = 19
    SIGNED_INT_LESS_THAN = 20
    BITMASK = 21
    CUSTOM = 22
    WITHIN_ALLOWANCE = 28
    ETHER_WITHIN_ALLOWANCE = 29
    CALL_WITHIN_ALLOWANCE = 30


class Status(IntEnum):
    """``ConditionViolation(status, info)``: why the module refused a call."""

    OK = 0
    DELEGATE_CALL_NOT_ALLOWED = 1
    TARGET_ADDRESS_NOT_ALLOWED = 2
    FUNCTION_NOT_ALLOWED = 3
    SEND_NOT_ALLOWED = 4
    OR_VIOLATION = 5
    NOR_VIOLATION = 6
    PARAMETER_NOT_ALLOWED = 7
    PARAMETER_LESS_THAN_ALLOWED = 8
    PARAMETER_GREATER_THAN_ALLOWED = 9
    PARAMETER_NOT_A_MATCH = 10
    NOT_EVERY_ARRAY_ELEMENT_PASSES = 11
    NO_ARRAY_ELEMENT_PASSES = 12
    PARAMETER_NOT_SUBSET_OF_ALLOWED = 13
    BITMASK_OVERFLOW = 14
    BITMASK_NOT_ALLOWED = 15
    CUSTOM_CONDITION_VIOLATION = 16
    ALLOWANCE_EXCEEDED = 17
    CALL_ALLOWANCE_EXCEEDED = 18
    ETHER_ALLOWANCE_EXCEEDED = 19


class ExecutionOptions(IntEnum):
    NONE = 0  # a plain call without value
    SEND = 1
    DELEGATE_CALL = 2
    BOTH = 3


@dataclass(frozen=True)
class Condition:
    parent: int
    param_type: ParamType
    operator: Operator
    comp_value: bytes = b""

    def as_tuple(self) -> tuple[int, int, int, bytes]:
        """The ``(uint8 parent, uint8 paramType, uint8 operator, bytes compValue)`` ABI tuple."""
        return (self.parent, int(self.param_type), int(self.operator), self.comp_value)

    def describe(self) -> str:
        v = f" {self.comp_value.hex()}" if self.comp_value else ""
        return f"{self.param_type.name.lower()} {self.operator.name.lower()}{v}"


@dataclass(frozen=True)
class FunctionScope:
    """``scopeFunction(role, target, selector, conditions, options)``."""

    target: str  # checksummed
    selector: bytes  # 4 bytes
    conditions: tuple[Condition, ...]
    options: ExecutionOptions = ExecutionOptions.NONE
    label: str = ""  # "Pool.withdraw", for listings


@dataclass(frozen=True)
class AllowanceState:
    """``allowances(key)``: refill (per period), maxRefill, period (s), balance, timestamp."""

    refill: int
    max_refill: int
    period_s: int
    balance: int
    timestamp: int


@dataclass(frozen=True)
class InstalledRole:
    """A Roles module and one role as the chain has them: views read at a block, and the
    role's scopes rebuilt from every event the module emitted (each owner change emits one)."""

    module: str
    block: int
    has_code: bool
    owner: str | None
    avatar: str | None
    target: str | None
    enabled_on_safe: bool
    # (to, selector) -> adapter
    unwrappers: dict[tuple[str, bytes], str] = field(default_factory=dict)
    members: frozenset[str] = frozenset()  # modules (keys) holding the role
    agent_roles: frozenset[bytes] = frozenset()  # every role the agent's key holds
    agent_default_role: bytes = bytes(32)
    # target -> "function" (scoped: only its scoped functions) or "target" (everything)
    targets: dict[str, str] = field(default_factory=dict)
    # (target, selector) -> scope; a wildcarded allowFunction has conditions == () and
    # label "allowFunction (any parameters)"
    functions: dict[tuple[str, bytes], FunctionScope] = field(default_factory=dict)
    allowances: dict[bytes, AllowanceState] = field(default_factory=dict)
