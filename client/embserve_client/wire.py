"""The missing-key policies on the wire: the names users pass <-> the proto enum.

Dtypes, unit() and default limits are the format core's (:mod:`embserve_format.arrays`,
:mod:`embserve_format.limits`); this module holds only what needs the generated protobuf.
"""

from __future__ import annotations

from embserve_client.pb import embserve_pb2 as pb

# Policy name (what users pass) -> proto enum value.
MISSING_POLICIES: dict[str, pb.MissingPolicy] = {
    "error": pb.MISSING_POLICY_ERROR,
    "skip": pb.MISSING_POLICY_SKIP,
    "zero": pb.MISSING_POLICY_ZERO,
    "subword": pb.MISSING_POLICY_SUBWORD,
}
# Proto enum value -> policy name; an unset policy means "error".
POLICY_NAMES: dict[int, str] = {pb.MISSING_POLICY_UNSPECIFIED: "error", **{v: k for k, v in MISSING_POLICIES.items()}}
