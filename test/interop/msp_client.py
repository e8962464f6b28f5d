#!/usr/bin/env python3
# An MSP's client in another language, written from proto/ and its comments alone: Python's
# grpcio (gRPC's C core, with its own TLS) with stubs that protoc generated from proto/, and
# every signature checked with the `cryptography` package. It takes the registry from the
# root and checks the root's signature with the pinned root key, checks each answer's DP seal
# (alone or batched) and each mapping's MSP signature with the keys that registry publishes,
# and reads the rich error details (google.rpc.Status) of bad requests. It prints one line per
# check ("ok" or "FAIL") and exits 1 when any failed. test/slow/interop.test.ts runs it
# against a real network; it runs as well against `npm start`'s:
#   protoc -Iproto --python_out=GEN --grpc_out=GEN --plugin=protoc-gen-grpc=$(which grpc_python_plugin) $(find proto -name '*.proto')
#   python3 test/interop/msp_client.py --gen GEN --pki data/pki
import argparse
import hashlib
import os
import struct
import sys
import time

ap = argparse.ArgumentParser()
ap.add_argument("--gen", required=True, help="folder of the stubs protoc generated from proto/")
ap.add_argument("--pki", required=True, help="folder with ca.pem, cli.pem, cli-key.pem, root-signing.pub")
ap.add_argument("--resolver", default="127.0.0.1:7600")
ap.add_argument("--root", default="127.0.0.1:7400")
ap.add_argument("--found", default="tel:+447700900123", help="a CSI that has mappings")
ap.add_argument("--not-found", default="tel:+447700900456", help="a CSI that has none")
ap.add_argument("--stream-prefix", default="tel:+1202555", help="4 digits are added to it for each stream item")
ap.add_argument("--stream-items", type=int, default=200)
args = ap.parse_args()
sys.path.insert(0, args.gen)

import grpc  # noqa: E402
from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: E402
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key  # noqa: E402
from google.rpc import error_details_pb2, status_pb2  # noqa: E402
from mimi.discovery.v1 import common_pb2 as common  # noqa: E402
from mimi.discovery.v1 import resolver_pb2, resolver_pb2_grpc, root_pb2, root_pb2_grpc  # noqa: E402

failures = 0


def check(what, ok, info=""):
    global failures
    print("ok  " if ok else "FAIL", what, info, flush=True)
    if not ok:
        failures += 1


def read(name):
    with open(os.path.join(args.pki, name), "rb") as f:
        return f.read()


creds = grpc.ssl_channel_credentials(read("ca.pem"), read("cli-key.pem"), read("cli.pem"))


def channel(address):
    # The development certificates name localhost and 127.0.0.1.
    return grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", "localhost")])


def sha256(*parts):
    return hashlib.sha256(b"".join(parts)).digest()


def ed25519_valid(public_key, context, message, signature):
    # "Ed25519 over the ASCII bytes of its context, one zero byte, and the message."
    try:
        key = Ed25519PublicKey.from_public_bytes(public_key)
        key.verify(signature, context.encode("ascii") + b"\x00" + message)
        return True
    except (InvalidSignature, ValueError):
        return False


# --- The registry (common.proto, RegistrySignature): u32 lengths, big-endian integers. ---
def u32(n):
    return struct.pack(">I", n)


def s32(text):
    b = text.encode("utf-8")
    return u32(len(b)) + b


def b32(data):
    return u32(len(data)) + data


def strings32(items):
    return u32(len(items)) + b"".join(s32(x) for x in items)


def registry_digest(snap):
    placed = any(len(d.endpoint_jurisdictions) > 0 for d in snap.dps)
    out = [b"MIMI-REGISTRY-v5" if placed else b"MIMI-REGISTRY-v4"]
    out.append(struct.pack(">QQQ", snap.serial, snap.signed_at_ms, snap.expires_at_ms))
    out.append(u32(len(snap.delegations)))
    for d in sorted(snap.delegations, key=lambda d: d.id):
        out += [s32(d.id), s32(d.dp_id), u32(d.ttl_seconds), strings32(d.federated_dp_ids)]
    out.append(u32(len(snap.dps)))
    for d in sorted(snap.dps, key=lambda d: d.id):
        out += [s32(d.id), strings32(d.endpoints), s32(d.tls_identity), s32(d.jurisdiction), b32(d.signing_public_key)]
        mode = 2 if d.federation.default_mode == common.FEDERATION_MODE_FEDERATE else 1
        out += [u32(mode), strings32(d.federation.preferred_dp_ids)]
        keys = sorted(d.private_lookup_keys, key=lambda k: k.epoch)
        out.append(u32(len(keys)))
        out += [u32(k.epoch) + b32(k.public_key) for k in keys]
        if placed:
            places = sorted(d.endpoint_jurisdictions, key=lambda p: p.endpoint)
            out.append(u32(len(places)))
            out += [s32(p.endpoint) + s32(p.jurisdiction) for p in places]
    out.append(u32(len(snap.msps)))
    for m in sorted(snap.msps, key=lambda m: m.id):
        out += [s32(m.id), s32(m.name), u32(m.index), b32(m.signing_public_key)]
    return sha256(*out)


# --- An answer's seal (common.proto, AnswerSeal and SealBatch): u16 lengths. ---
class Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n):
        chunk = self.data[self.at : self.at + n]
        if len(chunk) != n:
            raise ValueError("statement ends early")
        self.at += n
        return chunk

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def bytes16(self):
        return self.take(self.u16())

    def string16(self):
        return self.bytes16().decode("utf-8")


def seal_statement(data):
    r = Reader(data)
    if r.take(len(b"MIMI-ANSWER-v1")) != b"MIMI-ANSWER-v1":
        raise ValueError("not an answer statement")
    st = {"csi": r.string16(), "dp_id": r.string16(), "status": r.u8(), "signed_at_ms": r.u64(), "expires_at_ms": r.u64()}
    st["mappings"] = [(r.string16(), r.u8() == 1, r.bytes16()) for _ in range(r.u16())]
    st["opt_out_digest"] = r.bytes16()
    if r.at != len(data):
        raise ValueError("bytes after the statement")
    return st


def delegated_dp(snap, csi):
    """The DP the registry delegates a tel: CSI to: the longest matching E.164 prefix."""
    if not csi.startswith("tel:+"):
        raise ValueError("this client looks up delegations of tel: CSIs only")
    digits, best = csi[len("tel:+"):], None
    for d in snap.delegations:
        prefix = d.key.e164_prefix if d.key.WhichOneof("key") == "e164_prefix" else None
        # The signature covers the id, so the key must be the id's (common.proto, Delegation).
        if prefix is None or d.id != f"e164:{prefix}":
            continue
        if digits.startswith(prefix) and (best is None or len(prefix) > len(best.key.e164_prefix)):
            best = d
    return best.dp_id if best else None


def record_csi_and_msp(record):
    r = Reader(record)
    if r.take(len(b"MIMI-MAPPING-v1")) != b"MIMI-MAPPING-v1":
        raise ValueError("not a mapping record")
    return r.string16(), r.string16()


def root_from_path(leaf, index, size, path):
    # RFC 9162, section 2.1.3.2.
    if not 0 <= index < size or not 2 <= size <= 256 or len(path) % 32:
        raise ValueError("bad index, size or path")
    fn, sn, r = index, size - 1, leaf
    for i in range(0, len(path), 32):
        p = path[i : i + 32]
        if sn == 0:
            raise ValueError("path too long")
        if fn & 1 or fn == sn:
            r = sha256(b"\x01", p, r)
            if not fn & 1:
                while (fn & 1) == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(b"\x01", r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("path too short")
    return r


def answer_problem(csi, answer, dps, msps):
    """None when the answer's seal and mappings verify, else what is wrong."""
    try:
        return sealed_answer_problem(csi, answer, dps, msps, delegated_dp(snap, csi))
    except (ValueError, UnicodeDecodeError) as err:
        return str(err)


def sealed_answer_problem(csi, answer, dps, msps, delegated):
    seal = answer.seal
    st = seal_statement(seal.statement)
    now = time.time() * 1000
    if st["csi"] != csi:
        return f"sealed for {st['csi']}"
    if st["status"] != answer.status:
        return "status differs from the seal"
    skew_ms = 300_000
    if st["signed_at_ms"] > now + skew_ms or st["expires_at_ms"] <= now:
        return "seal outside its validity"
    if st["expires_at_ms"] - st["signed_at_ms"] > 7 * 86_400_000:
        return "seal valid for longer than 7 days"
    # The seal must be by the DP the registry delegates the CSI to, whatever the answer says.
    if st["dp_id"] != delegated or delegated not in dps:
        return f"sealed by {st['dp_id']}, not the delegated DP {delegated}"
    dp = dps[delegated]
    if seal.HasField("batch"):
        b = seal.batch
        root = root_from_path(sha256(b"\x00", b.salt, seal.statement), b.index, b.size, b.path)
        signed = b"MIMI-ANSWER-BATCH-v1" + struct.pack(">HH", b.size, 32) + root
        if not ed25519_valid(dp.signing_public_key, "MIMI-ANSWER-BATCH-DP-v1", signed, seal.signature):
            return "batched seal does not verify"
    elif not ed25519_valid(dp.signing_public_key, "MIMI-ANSWER-DP-v1", seal.statement, seal.signature):
        return "seal does not verify"
    if len(st["mappings"]) != len(answer.mappings):
        return "mappings differ from the seal"
    for (msp_id, is_default, digest), m in zip(st["mappings"], answer.mappings):
        if msp_id != m.msp_id or is_default != m.is_default or sha256(m.signed.record) != digest:
            return f"mapping at {m.msp_id} is not the sealed one"
        if record_csi_and_msp(m.signed.record) != (csi, msp_id):
            return f"mapping at {msp_id}: its record is for another CSI or MSP"
        msp = msps.get(msp_id)
        if msp is None or not ed25519_valid(msp.signing_public_key, "MIMI-MAPPING-MSP-v1", m.signed.record, m.signed.msp_signature):
            return f"mapping at {msp_id}: MSP signature does not verify"
    return None


def rich_details(err):
    for key, value in err.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            out = {"code": status.code}
            for any_ in status.details:
                for kind in (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest, error_details_pb2.RetryInfo):
                    if any_.Is(kind.DESCRIPTOR):
                        msg = kind()
                        any_.Unpack(msg)
                        out[kind.__name__] = msg
            return out
    return None


# 1. The registry, checked against the pinned root key.
root_key = load_pem_public_key(read("root-signing.pub")).public_bytes(Encoding.Raw, PublicFormat.Raw)
snap = root_pb2_grpc.RootServiceStub(channel(args.root)).GetSnapshot(root_pb2.GetSnapshotRequest(), timeout=10).snapshot
signed = ed25519_valid(root_key, "MIMI-REGISTRY-SIG-v1", registry_digest(snap), snap.signature)
check("the registry verifies with the root key", signed, f"serial {snap.serial}, {len(snap.dps)} DPs, {len(snap.msps)} MSPs")
dps = {d.id: d for d in snap.dps} if signed else {}
msps = {m.id: m for m in snap.msps} if signed else {}

# 2. Health, as a load balancer's probe asks it (grpc.health.v1, an empty request).
resolver = channel(args.resolver)
health = resolver.unary_unary("/grpc.health.v1.Health/Check")(b"", timeout=10)
check("the resolver is SERVING", health == b"\x08\x01", repr(health))

# 3. Resolve: a found and a not-found CSI, each sealed.
stub = resolver_pb2_grpc.ResolverServiceStub(resolver)
for csi, want in ((args.found, common.LOOKUP_STATUS_FOUND), (args.not_found, common.LOOKUP_STATUS_NOT_FOUND)):
    answer = stub.Resolve(resolver_pb2.ResolveRequest(csi=csi), timeout=10).answer
    problem = answer_problem(csi, answer, dps, msps)
    check(f"Resolve {csi} verifies", answer.status == want and problem is None,
          f"status {answer.status}, {len(answer.mappings)} mappings, {problem or 'sealed'}")

# 4. ResolveStream: many CSIs at once, so that the DP seals several together.
csis = [f"{args.stream_prefix}{n:04d}" for n in range(args.stream_items)]
requests = (resolver_pb2.ResolveStreamRequest(request_id=i, csi=c) for i, c in enumerate(csis))
answered, batched, problems, item_errors, last_batched = set(), 0, [], {}, None
for item in stub.ResolveStream(requests, timeout=60):
    answered.add(item.request_id)
    if item.HasField("error"):
        item_errors[item.error.reason] = item_errors.get(item.error.reason, 0) + 1
        continue
    answer = item.response.answer
    problem = answer_problem(csis[item.request_id], answer, dps, msps)
    if problem:
        problems.append(f"{csis[item.request_id]}: {problem}")
    if answer.seal.HasField("batch"):
        batched += 1
        last_batched = (csis[item.request_id], answer)
check("ResolveStream: every item answered and verified",
      len(answered) == len(csis) and not problems and not item_errors,
      f"{len(answered)} answered, {batched} in sealed batches, problems {problems[:3]}, item errors {item_errors}")
print(f"batched seals: {batched}", flush=True)

# 5. The checks above can fail: an answer or a registry changed on the way is refused, each for
# the reason expected, while the same answer unchanged verifies.
def changed(answer, change):
    copy = common.Answer()
    copy.CopyFrom(answer)
    change(copy)
    return copy


def refused(what, csi, answer, expected, keys=None):
    problem = answer_problem(csi, answer, keys or dps, msps)
    check(what, problem is not None and expected in problem, repr(problem))


found = stub.Resolve(resolver_pb2.ResolveRequest(csi=args.found), timeout=10).answer
check("the answer to change verifies as it came", answer_problem(args.found, found, dps, msps) is None)
refused("a changed default flag is refused", args.found,
        changed(found, lambda a: setattr(a.mappings[0], "is_default", not a.mappings[0].is_default)),
        "is not the sealed one")
refused("another CSI's answer is refused", args.not_found, found, "sealed for")
sealer = seal_statement(found.seal.statement)["dp_id"]
other_dp = next(d for d in dps if d != sealer)
refused("a seal checked with another DP's key is refused", args.found, found, "does not verify",
        {**dps, sealer: dps[other_dp]})
if last_batched is not None:
    csi, answer = last_batched
    check("the batched answer to change verifies as it came", answer_problem(csi, answer, dps, msps) is None)
    flipped = bytes([answer.seal.batch.path[0] ^ 1]) + answer.seal.batch.path[1:]
    refused("a batched seal with a changed path is refused", csi,
            changed(answer, lambda a: setattr(a.seal.batch, "path", flipped)), "batched seal does not verify")
    refused("a batched seal with another salt is refused", csi,
            changed(answer, lambda a: setattr(a.seal.batch, "salt", bytes(16))), "batched seal does not verify")
later = root_pb2.GetSnapshotResponse().snapshot
later.CopyFrom(snap)
later.msps[0].signing_public_key = bytes(32)
check("a registry with a changed MSP key is refused",
      not ed25519_valid(root_key, "MIMI-REGISTRY-SIG-v1", registry_digest(later), snap.signature))

# 6. Bad requests: INVALID_ARGUMENT, with the field to fix in machine-readable form.
for csi in ("tel:12ab", "", "x" * 1000):
    try:
        stub.Resolve(resolver_pb2.ResolveRequest(csi=csi), timeout=10)
        check(f"bad CSI {csi[:12]!r} is refused", False, "it was answered")
    except grpc.RpcError as err:
        d = rich_details(err) or {}
        fields = [v.field for v in d["BadRequest"].field_violations] if "BadRequest" in d else []
        reason = d["ErrorInfo"].reason if "ErrorInfo" in d else None
        check(f"bad CSI {csi[:12]!r} is refused naming the field",
              err.code() == grpc.StatusCode.INVALID_ARGUMENT and fields == ["csi"] and reason == "INVALID_CSI",
              f"{err.code().name}: {err.details()!r}, fields {fields}, reason {reason}")

print(f"{failures} failed", flush=True)
sys.exit(1 if failures else 0)
