"""The workflow sandbox custos workers use.

``cryptography`` (approval signature checks in update validators) is a native
library: re-importing it inside the sandbox aborts the process when it raises
``InvalidSignature``, so it, and the deterministic domain modules, pass through.
``opentelemetry`` passes through too (the tracing interceptor's workflow side uses it):
a copy re-imported inside the sandbox would have its own unset tracer provider and
context, and spans made through it would be lost.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = (
    "cryptography",
    "opentelemetry",
    "services.policy.evidence",
    "services.policy.domain",
    "services.runtime.intent",
)

RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
)
