"""Content Credentials (C2PA) on what the studio writes, and reading them back.

Every PNG, GIF and MP4 that goes into History is signed with a C2PA manifest (the Content Authenticity
Initiative's `c2pa-python`): a `c2pa.actions.v2` assertion saying the file was made by a trained model
(`digitalSourceType = trainedAlgorithmicMedia`, or composited with one for edits of a picture the user brought),
which model and the parameters that made it; edits (img2img, inpaint, upscale) add their start picture as an
ingredient. Pictures of at least 256×256 pixels also get the invisible watermark of `pipelines.watermark`
first, so the mark is inside the signed pixels.

The key and certificate are this install's own, made on first use: a local certificate authority and a signer
certificate it issued (C2PA refuses a self-signed end certificate). Such a signature proves the file has not
changed since this install signed it — integrity — but not who the signer is: nobody outside trusts the local
authority. Users who have a certificate from a C2PA-trusted authority point `signing_cert` / `signing_key` at it.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("studio")

GENERATOR = "GenAI Studio"
SOURCE_TYPES = "http://cv.iptc.org/newscodes/digitalsourcetype/"
CREATED = SOURCE_TYPES + "trainedAlgorithmicMedia"
COMPOSITE = SOURCE_TYPES + "compositeWithTrainedAlgorithmicMedia"
PARAMETERS_LABEL = "org.genai-studio.parameters"
MIME = {".png": "image/png", ".gif": "image/gif", ".mp4": "video/mp4"}  # what the studio writes and signs
# the failures a local signer always has (no trust list knows it; no network for revocation checks)
EXPECTED = ("signingCredential.untrusted", "signingCredential.ocsp.skipped", "timeStamp.untrusted")


@dataclass(frozen=True)
class Origin:
    """How a file came to be: made from noise (`created`), or an `edited` start picture (img2img, inpaint,
    upscale), whose bytes become the manifest's ingredient."""

    action: str = "created"  # created | edited
    description: str = ""  # e.g. "img2img", "inpaint", "upscale"
    ingredient: bytes | None = None  # the start picture, any format PIL reads
    ingredient_title: str = "start picture"
    edit: str = "c2pa.edited"  # the C2PA action of an edit: c2pa.edited, or c2pa.resized for a plain upscale
    by_model: bool = True  # a model made the change (False: Lanczos resizing, no generated content)

    def __post_init__(self) -> None:
        if self.action not in ("created", "edited"):
            raise ValueError(f"origin action must be created or edited, got {self.action!r}")


CREATED_ORIGIN = Origin()


def sniff(data: bytes) -> str:
    """The MIME type of image/video bytes from their first bytes; "" when not one the studio reads."""
    head = data[:16]
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    return ""


# -- this install's key and certificates --------------------------------------------------------------------


@dataclass(frozen=True)
class Credentials:
    chain: bytes  # PEM: the signer certificate, then the authority that issued it
    key: bytes  # PEM (PKCS#8) private key of the signer certificate
    serial: int  # the signer certificate's serial number: "signed by this install" when a file's matches


def make_credentials(folder: Path, name: str = "GenAI Studio") -> None:
    """A local authority (ca.pem) and a signer certificate it issued (signer.pem, signer.key, readable only
    by the user), EC P-256 / ES256, valid ten years."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = _dt.datetime.now(_dt.timezone.utc) - _dt.timedelta(minutes=5)
    later = now + _dt.timedelta(days=3650)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())

    def subject(common: str):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"{name} (this install, self-signed)")])

    ca_name = subject(f"{name} local authority")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    signer = (x509.CertificateBuilder().subject_name(subject(f"{name} signer")).issuer_name(ca_name)
              .public_key(key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now).not_valid_after(later)
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False),
                             critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "signer.pem").write_bytes(signer.public_bytes(pem))
    key_path = folder / "signer.key"
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as f:
        f.write(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def load_credentials(folder: Path, cert: Path | None = None, key: Path | None = None) -> Credentials:
    """The user's own certificate chain and key when given, else this install's (made on first use)."""
    from cryptography import x509

    if cert or key:
        if not (cert and key):
            raise ValueError("signing_cert and signing_key go together: give both files, or neither")
        chain, secret = Path(cert).read_bytes(), Path(key).read_bytes()
    else:
        if not (folder / "signer.key").is_file():
            make_credentials(folder)
        chain = (folder / "signer.pem").read_bytes() + (folder / "ca.pem").read_bytes()
        secret = (folder / "signer.key").read_bytes()
    try:
        serial = x509.load_pem_x509_certificate(chain).serial_number
    except ValueError as exc:
        raise ValueError(f"signing_cert: not a PEM certificate chain ({exc})") from None
    return Credentials(chain, secret, serial)


# -- signing ------------------------------------------------------------------------------------------------


def manifest(title: str, origin: Origin, model: str, parameters: dict, version: str) -> dict:
    agent = {"name": GENERATOR, "version": version}
    made = {"action": "c2pa.created", "digitalSourceType": CREATED, "softwareAgent": agent,
            "parameters": {"model": model}}
    if origin.action == "edited":
        actions = [{"action": "c2pa.opened", "parameters": {"ingredientIds": ["start-picture"]}},
                   {"action": origin.edit, "softwareAgent": agent, "description": origin.description or "edited",
                    "parameters": {"model": model}, **({"digitalSourceType": COMPOSITE} if origin.by_model else {})}]
    else:
        actions = [made]
    return {"claim_generator_info": [agent], "title": title,
            "assertions": [{"label": "c2pa.actions.v2", "data": {"actions": actions}},
                           {"label": PARAMETERS_LABEL, "data": {"model": model, "parameters": parameters}}]}


def _png_ingredient(data: bytes) -> bytes:
    """The start picture as PNG bytes (C2PA reads the ingredient's own format; ours is always PNG)."""
    if sniff(data) == "image/png":
        return data
    from PIL import Image

    buffer = io.BytesIO()
    with Image.open(io.BytesIO(data)) as image:
        image.convert("RGBA" if "A" in image.getbands() else "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def marked_image(image):
    """A PIL picture with the invisible watermark in its colour pixels (RGB or RGBA of 256×256 and more; any
    other picture is returned as it is)."""
    import numpy as np
    from PIL import Image

    from pipelines import watermark

    if image.mode not in ("RGB", "RGBA") or not watermark.can_mark(image.width, image.height):
        return image
    pixels = np.asarray(image)
    rgb = watermark.mark(np.ascontiguousarray(pixels[..., :3]))
    return Image.fromarray(np.dstack([rgb, pixels[..., 3:]]) if pixels.shape[-1] == 4 else rgb)


def watermarked_png(data: bytes) -> bytes:
    """The PNG with the invisible watermark in its colour pixels, its text chunks (parameters) kept; unchanged
    when smaller than 256×256."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    from pipelines import watermark

    with Image.open(io.BytesIO(data)) as image:
        if not watermark.can_mark(image.width, image.height) or image.mode not in ("RGB", "RGBA"):
            return data
        image.load()
        text = dict(getattr(image, "text", {}))
        out = marked_image(image)
    info = PngInfo()
    for key, value in text.items():
        if value.isascii() and key == "parameters":
            info.add_text(key, value)  # tEXt, as AUTOMATIC1111 writes it (readers look for it there)
        else:
            info.add_itxt(key, value)
    buffer = io.BytesIO()
    # zlib level 1: a second encode of the picture, so the fast one (48 ms at 512² instead of 97 ms, 13% larger)
    out.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


@dataclass
class Provenance:
    """Seals what History writes: watermark (pictures ≥256²) and Content Credentials. Safe to share between
    requests: a builder is made per file, a signer per thread; credentials load once under a lock."""

    folder: Path  # where this install's credentials live (made on first use)
    credentials_on: bool = True
    watermark_on: bool = True
    cert: Path | None = None
    key: Path | None = None
    version: str = "0"
    _credentials: Credentials | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _per_thread: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def credentials(self) -> Credentials:
        with self._lock:
            if self._credentials is None:
                self._credentials = load_credentials(self.folder, self.cert, self.key)
            return self._credentials

    def check(self) -> None:
        """Sign a 1-pixel picture now, so a certificate and key that do not go together (or that C2PA refuses)
        are a clear start-up error naming the settings, not pictures kept unsigned later."""
        from PIL import Image

        buffer = io.BytesIO()
        Image.new("RGB", (1, 1)).save(buffer, format="PNG")
        try:
            self.sign(buffer.getvalue(), "image/png", title="check.png", origin=CREATED_ORIGIN, model="",
                      parameters={})
        except Exception as exc:  # noqa: BLE001 — c2pa's own error types
            raise ValueError(f"signing_cert / signing_key: Content Credentials cannot be signed with them "
                             f"({str(exc)[:200]}). C2PA needs an ES256 (EC P-256) certificate chain that is not "
                             "self-signed, and its own private key.") from None

    def mark(self, image):
        """A PIL picture with the invisible watermark in its pixels (when on and the picture is ≥256²), so it is
        encoded once, marked (`seal(..., marked=True)`), instead of encoded, decoded, marked and encoded again."""
        return marked_image(image) if self.watermark_on else image

    def seal(self, suffix: str, data: bytes, *, title: str, origin: Origin = CREATED_ORIGIN, model: str = "",
             parameters: dict | None = None, marked: bool = False) -> bytes:
        """`data` as it should be kept: watermarked (PNG; `marked`: its pixels already are) and signed (PNG, GIF,
        MP4); other files unchanged."""
        if suffix not in MIME:
            return data
        if suffix == ".png" and self.watermark_on and not marked:
            data = watermarked_png(data)
        if not self.credentials_on:
            return data
        return self.sign(data, MIME[suffix], title=title, origin=origin, model=model, parameters=parameters or {})

    def sign(self, data: bytes, mime: str, *, title: str, origin: Origin, model: str, parameters: dict) -> bytes:
        import c2pa

        signer, context = self._signing()
        plain = json.loads(json.dumps(parameters, default=str))  # the manifest is JSON: paths and tuples as text
        builder = c2pa.Builder(manifest(title, origin, model, plain, self.version), context)
        if origin.action == "edited" and origin.ingredient:
            builder.add_ingredient({"title": f"{origin.ingredient_title}.png", "relationship": "parentOf",
                                    "label": "start-picture"}, "image/png",
                                   io.BytesIO(_png_ingredient(origin.ingredient)))
        out = io.BytesIO()
        try:
            builder.sign(signer, mime, io.BytesIO(data), out)
        finally:
            builder.close()
        return out.getvalue()

    def _signing(self):
        """This thread's signer and context (made once per thread: half of a small picture's signing time;
        a builder is still made per file)."""
        import c2pa

        made = getattr(self._per_thread, "made", None)
        if made is None:
            credentials = self.credentials()
            signer = c2pa.Signer.from_info(c2pa.C2paSignerInfo(c2pa.C2paSigningAlg.ES256, credentials.chain,
                                                               credentials.key, None))
            context = c2pa.Context(c2pa.Settings.from_dict({"builder": {"thumbnail": {"enabled": False}}}))
            made = self._per_thread.made = (signer, context)
        return made


# -- reading ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credentialed:
    """What a file's Content Credentials say."""

    state: str  # "valid" | "tampered" | "none"
    signer: str = ""  # who the certificate names (issuer / common name)
    this_install: bool = False  # signed with this install's certificate
    signed_at: str = ""
    generator: str = ""
    actions: tuple[str, ...] = ()  # e.g. ("c2pa.created",) or ("c2pa.opened", "c2pa.edited")
    source_type: str = ""  # trainedAlgorithmicMedia, compositeWithTrainedAlgorithmicMedia, …
    model: str = ""
    parameters: dict = field(default_factory=dict)
    ingredients: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()  # what failed validation, in the library's words
    notes: tuple[str, ...] = ()  # what is expected of a self-signed credential (not trusted, no revocation check)


def read_credentials(data: bytes, serial: int | None = None) -> Credentialed:
    """Validate `data`'s C2PA manifest: valid, tampered (a hash or signature no longer matches), or none.
    `serial` is this install's signer serial, to say whether it signed the file."""
    import c2pa

    mime = sniff(data)
    if not mime:
        raise ValueError("the file is not a PNG, JPEG, WebP, GIF or MP4")
    try:
        reader = c2pa.Reader(mime, io.BytesIO(data))
    except c2pa.C2paError as exc:
        if "ManifestNotFound" in type(exc).__name__ or "not found" in str(exc).lower():
            return Credentialed("none")
        return Credentialed("tampered", problems=(f"the manifest cannot be read: {str(exc)[:200]}",))
    try:
        state = reader.get_validation_state() or ""
        results = reader.get_validation_results() or {}
        active = reader.get_active_manifest() or {}
    finally:
        getattr(reader, "close", lambda: None)()
    failures = [*results.get("activeManifest", {}).get("failure", []),
                *(f for ingredient in results.get("ingredientDeltas", [])
                  for f in ingredient.get("validationDeltas", {}).get("failure", []))]
    problems = tuple(f"{f.get('code')}: {f.get('explanation', '')}".strip() for f in failures
                     if f.get("code") not in EXPECTED)
    notes = tuple(f.get("code", "") for f in failures if f.get("code") in EXPECTED)
    signature = active.get("signature_info", {}) or {}
    assertions = {a.get("label", ""): a.get("data", {}) for a in active.get("assertions", [])}
    actions = (assertions.get("c2pa.actions.v2") or assertions.get("c2pa.actions") or {}).get("actions", [])
    ours = assertions.get(PARAMETERS_LABEL, {})
    try:
        this_install = serial is not None and int(str(signature.get("cert_serial_number", "")), 0) == serial
    except ValueError:
        this_install = False
    generator = ", ".join(f"{g.get('name', '')} {g.get('version', '')}".strip()
                          for g in active.get("claim_generator_info", []))
    source = next((a.get("digitalSourceType", "") for a in reversed(actions) if a.get("digitalSourceType")), "")
    return Credentialed(
        state="tampered" if problems or state.lower() == "invalid" else "valid",
        signer=" / ".join(x for x in (signature.get("common_name", ""), signature.get("issuer", "")) if x),
        this_install=this_install, signed_at=str(signature.get("time", "") or ""), generator=generator,
        actions=tuple(a.get("action", "") for a in actions), source_type=source.rsplit("/", 1)[-1],
        model=str(ours.get("model") or next((a.get("parameters", {}).get("model", "") for a in actions), "")),
        parameters=ours.get("parameters", {}) if isinstance(ours.get("parameters"), dict) else {},
        ingredients=tuple(i.get("title", "") for i in active.get("ingredients", [])),
        problems=problems, notes=notes)


@dataclass(frozen=True)
class Verification:
    """Everything the Verify panel shows about one file."""

    mime: str
    credentials: Credentialed
    watermark: object | None  # pipelines.watermark.Detection; None for video
    png: dict  # pipelines.media.read_png_info for images PIL reads (A1111 parameters), else {}


def verify(data: bytes, serial: int | None = None, max_pixels: int = 16_000_000) -> Verification:
    """Content Credentials, watermark and AUTOMATIC1111 parameters of any picture or MP4; pictures above
    `max_pixels` are refused before they are decoded (a small file can hold a huge picture)."""
    from PIL import Image, UnidentifiedImageError

    from pipelines import watermark
    from pipelines.media import read_png_info

    mime = sniff(data)
    if not mime:
        raise ValueError("file: not a PNG, JPEG, WebP, GIF or MP4 picture; drop one of those")
    credentials = read_credentials(data, serial)
    detection, png = None, {}
    if mime != "video/mp4":
        try:
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > max_pixels:
                    raise ValueError(f"file: the picture is {image.width}×{image.height}, more than "
                                     f"{max_pixels / 1e6:.1f} megapixels; verify a smaller copy")
                image.seek(0)
                detection = watermark.detect(image.convert("RGB"))
            png = read_png_info(io.BytesIO(data))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"file: the picture cannot be decoded ({str(exc)[:200]})") from None
    return Verification(mime, credentials, detection, png)
