"""The workflow sandbox custos workers use.

``cryptography`` (approval signature checks in update validators) is a native
library: re-importing it inside the sandbox aborts the process when it raises
``InvalidSignature``, so it, and the deterministic domain modules, pass through.
"""

from __future__ import annotations

from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

PASSTHROUGH = (
    "cryptography",
    "services.policy.evidence",
    "services.policy.domain",
    "services.runtime.intent",
)

RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(*PASSTHROUGH)
)
