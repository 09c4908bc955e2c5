"""The domain's policies built from the configuration: the one translation between the two.

``authz.domain`` knows no configuration (it imports nothing outside itself, checked by the
import contracts in pyproject.toml); the server, the operations layer and the CLI build the
plain-data policies here and pass them in.
"""

from __future__ import annotations

from authz.config import Config, PolicyConfig
from authz.domain.decide import Policy
from authz.domain.issuing import IssuePolicy


def decision_policy(cfg: Config) -> Policy:
    """What ``screen``/``judge`` depend on, flattened for the hot path."""
    return Policy(
        schemes=frozenset(cfg.auth.schemes),
        deny_unauthenticated=cfg.auth.unauthenticated == "deny",
        token_prefixes=cfg.token_path_prefixes,
        identity_header=cfg.identity.header.lower(),
        xff_trusted_hops=cfg.client_ip.xff_trusted_hops,
        envoy_appends_peer=cfg.client_ip.envoy_appends_peer,
        max_header_bytes=cfg.auth.max_header_bytes,
        service_credential=bool(cfg.identity.upstream_authorization_file),
        allow_unbound_with_service_credential=(
            cfg.identity.allow_unbound_with_service_credential),
    )


def issue_policy(policy: PolicyConfig) -> IssuePolicy:
    """The ``policy.*`` issuing rules."""
    return IssuePolicy(
        max_lifetime_days=policy.max_lifetime_days,
        require_expiry=policy.require_expiry,
        max_active_tokens_per_user=policy.max_active_tokens_per_user,
        allow_unbound=policy.allow_unbound,
        allow_unrestricted=policy.allow_unrestricted,
        refuse_limit_warnings=policy.refuse_limit_warnings,
    )
