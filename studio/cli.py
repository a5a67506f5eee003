"""`studio` command line: launch · models · fetch · text · train · keys.

`studio` alone is `studio launch`. Every subcommand builds the same params objects the UI builds.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
from pathlib import Path

from pipelines.checks import short

SUBCOMMANDS = ("launch", "models", "fetch", "text", "train", "keys")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML settings file (limits, defaults); flags override it")
    p.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"], help="compute device (default auto: CUDA → MPS → CPU)")
    p.add_argument("--dtype", choices=["auto", "float32", "float16", "bfloat16"],
                   help="weights dtype (default auto: float16 on CUDA/MPS, float32 on CPU)")
    p.add_argument("--outputs", type=Path, help="folder for outputs and the History database (default ./outputs)")
    p.add_argument("--cache-dir", type=Path, help="model/data cache (default ~/.cache/genai-studio or $GENAI_STUDIO_CACHE)")
    p.add_argument("--offline", action="store_true", default=None, help="never download; use only the cache")
    p.add_argument("--allow-pickle", action="store_true", default=None,
                   help="allow pickle checkpoints (.ckpt/.bin), which can run code when loaded (off by default)")
    p.add_argument("--trust-remote-code", action="store_true", default=None,
                   help="allow hub models to run their own Python code (off by default; only for models you trust)")
    p.add_argument("--text-backend", choices=["auto", "llama.cpp", "transformers"],
                   help="text engine (default auto: llama.cpp for GGUF files on CPU/MPS when installed)")
    p.add_argument("--threads", type=int,
                   help="CPU threads for text generation (default: the physical cores, at most OMP_NUM_THREADS)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="studio", description="GenAI Studio: a local creative studio for generative models.")
    sub = parser.add_subparsers(dest="command")
    _launch_parser(sub)
    models = sub.add_parser("models", help="list the known models and whether each is in the cache")
    _common(models)

    fetch = sub.add_parser("fetch", help="fetch models into the cache now (default: the embedded defaults)")
    _common(fetch)
    fetch.add_argument("names", nargs="*", help="model names (see `studio models`)")

    _text_parser(sub)
    _train_parser(sub)
    _keys_parser(sub)
    return parser


def _launch_parser(sub) -> None:
    """`studio launch`: serving the web app (who may reach it, signing, speed, Ray, MCP)."""
    launch = sub.add_parser("launch", help="start the web app (the default command)")
    _common(launch)
    launch.add_argument("--host", help="address to listen on (default 127.0.0.1, this machine only)")
    launch.add_argument("--port", type=int, help="port (default 7860; 0 picks a free one)")
    launch.add_argument("--share", action="store_true", default=None, help="create a public share link")
    launch.add_argument("--auth", action="append", default=[], metavar="USER:PASS",
                        help="require a login; repeat for more users, or give a file of USER:PASS lines")
    launch.add_argument("--guest-auth", action="append", default=[], metavar="USER:PASS",
                        help="guest logins: generate only (no model switching, training or settings), with a quota")
    launch.add_argument("--guest-quota", type=float,
                        help="units of work per hour for each guest (default 30; one unit: a 512×512 picture at 20 "
                             "steps, or 512 tokens of text)")
    launch.add_argument("--public", dest="behind_proxy", action="store_true", default=None,
                        help="served to others through a reverse proxy: a login is required (as with --share)")
    launch.add_argument("--insecure-public", action="store_true", default=None,
                        help="allow --share / a non-loopback --host without --auth (a red banner says so)")
    launch.add_argument("--no-watermark", dest="watermark", action="store_false", default=None,
                        help="do not put the invisible watermark on pictures (Content Credentials stay)")
    launch.add_argument("--no-content-credentials", dest="content_credentials", action="store_false",
                        default=None, help="do not sign pictures and videos with C2PA Content Credentials")
    launch.add_argument("--signing-cert", metavar="PEM",
                        help="your own certificate chain for Content Credentials (with --signing-key)")
    launch.add_argument("--signing-key", metavar="PEM", help="the private key of --signing-cert")
    launch.add_argument("--compile", action="store_true", default=None,
                        help="torch.compile image models (UNet and VAE decoder) for speed on a GPU: the first "
                             "picture of each size compiles for a minute or more, later ones are faster")
    launch.add_argument("--compile-mode", choices=["default", "reduce-overhead", "max-autotune",
                                                   "max-autotune-no-cudagraphs"],
                        help="torch.compile mode (default max-autotune-no-cudagraphs; default compiles quicker)")
    launch.add_argument("--dry-run", action="store_true", help="build the app and exit without serving (for checks)")
    launch.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help="run the image models on Ray Serve: alone, a Ray on this machine; with an address "
                             "(e.g. head:6379), that cluster (needs the [ray] extra)")
    launch.add_argument("--mcp", action="store_true", default=None,
                        help="also serve the API as Model Context Protocol tools at /gradio_api/mcp/ "
                             "(needs the [mcp] extra)")


def _text_parser(sub) -> None:
    """`studio text PROMPT`: text generated headless, printed to stdout."""
    text = sub.add_parser("text", help="generate text headless, printing to stdout")
    _common(text)
    text.add_argument("prompt")
    text.add_argument("--model", default="", help="model name, hub id, folder or .gguf file")
    text.add_argument("--mode", choices=["completion", "chat"], default="completion")
    text.add_argument("--system", default="", help="system prompt (chat mode)")
    text.add_argument("--max-new-tokens", type=int, default=256)
    text.add_argument("--temperature", type=float, default=0.7)
    text.add_argument("--top-p", type=float, default=0.9)
    text.add_argument("--top-k", type=int, default=50)
    text.add_argument("--repetition-penalty", type=float, default=1.1)
    text.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    text.add_argument("--seed", type=int)


def _train_parser(sub) -> None:
    """`studio train emoji|digits`: training a shipped model reproducibly."""
    train = sub.add_parser("train", help="train a shipped model reproducibly")
    _common(train)
    train.add_argument("what", choices=["emoji", "digits"],
                       help="emoji: the embedded text-to-image model; digits: the 2-D and 16-D digit VAEs")
    train.add_argument("--out", type=Path, help="output folder (default assets/models/emoji-ldm or assets/models)")
    train.add_argument("--epochs", type=int, default=15, help="digits: training epochs per VAE")
    train.add_argument("--vae-steps", type=int, default=700)
    train.add_argument("--unet-steps", type=int, default=2800)
    train.add_argument("--finetune-steps", type=int, default=0,
                       help="emoji: more UNet steps after the main phase, with noise on the text conditioning")
    train.add_argument("--cond-noise", type=float, default=0.2,
                       help="emoji: that noise, × the caption embeddings' standard deviation")
    train.add_argument("--unet-batch", type=int, default=64, help="emoji: UNet batch size (a GPU run: 1024)")
    train.add_argument("--unet-lr", type=float, default=3e-4, help="emoji: UNet peak learning rate")
    train.add_argument("--checkpoint-every", type=int, default=100, help="emoji: UNet steps between checkpoints")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--tiny", action="store_true", help="a few steps on a few images (tests)")
    train.add_argument("--sets", default="openmoji,noto,twemoji,fluent-emoji-flat,emojione",
                       help="emoji: comma-separated emoji sets to train on (v1 was openmoji alone)")
    train.add_argument("--unet-channels", default="64,128,128", help="emoji: UNet block widths")
    train.add_argument("--vae-channels", default="32,64,64", help="emoji: VAE block widths")
    train.add_argument("--no-text-encoder", action="store_true",
                       help="do not link MiniLM into the output folder (the shipped assets omit it for size)")


def _keys_parser(sub) -> None:
    """`studio keys add NAME [--guest]` · `studio keys list` · `studio keys revoke NAME` (studio/keys.py)."""
    keys = sub.add_parser("keys", help="API keys for the OpenAI- and AUTOMATIC1111-compatible routes")
    action = keys.add_subparsers(dest="keys_command", required=True)
    add = action.add_parser("add", help="make a new key for user NAME and print it (shown once)")
    add.add_argument("name")
    add.add_argument("--guest", action="store_true", help="a guest's key: provided models only, with the quota")
    action.add_parser("list", help="list the keys (names, guest or owner, when made; never the keys)")
    revoke = action.add_parser("revoke", help="remove every key of user NAME")
    revoke.add_argument("name")
    for parser in action.choices.values():
        _common(parser)  # --outputs (where the keys file is) and --config, after the action


def _settings(args):
    from dataclasses import replace

    from studio.config import load_settings, parse_auth

    settings = load_settings(
        getattr(args, "config", None),
        host=getattr(args, "host", None), port=getattr(args, "port", None), share=getattr(args, "share", None),
        auth=parse_auth(getattr(args, "auth", [])) or None, insecure_public=getattr(args, "insecure_public", None),
        guest_auth=parse_auth(getattr(args, "guest_auth", [])) or None,
        guest_generations_per_hour=getattr(args, "guest_quota", None), behind_proxy=getattr(args, "behind_proxy", None),
        device=args.device, dtype=args.dtype,
        outputs=args.outputs, cache_dir=args.cache_dir, offline=args.offline,
        trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle,
        text_backend=args.text_backend, text_threads=args.threads,
        watermark=getattr(args, "watermark", None), content_credentials=getattr(args, "content_credentials", None),
        signing_cert=getattr(args, "signing_cert", None), signing_key=getattr(args, "signing_key", None),
        compile=getattr(args, "compile", None), compile_mode=getattr(args, "compile_mode", None),
    )
    if getattr(args, "ray", None):
        if importlib.util.find_spec("ray") is None:
            raise ValueError("--ray needs Ray Serve: pip install 'genai-studio[ray]'")
        settings = replace(settings, ray=replace(settings.ray, address=args.ray))
    return settings


def _ints(flag: str, text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated whole numbers such as 64,128,128, got {short(text)}") from None


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cap_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives busy threads their own malloc arenas (up to 8 per core); a server answering from a
    pool of worker threads then keeps growing through fragmentation. Two arenas kept RSS flat under
    load (tests/load: +2% over 200 requests instead of +4%, and 50 MB less)."""
    if sys.platform.startswith("linux") and "MALLOC_ARENA_MAX" not in os.environ:
        import ctypes

        try:
            ctypes.CDLL("libc.so.6").mallopt(-8, arenas)  # -8 is M_ARENA_MAX
        except (OSError, AttributeError):
            pass


def cmd_launch(args) -> int:
    from studio.app import build_app, launch
    from studio.services import Services

    _cap_malloc_arenas()
    services = Services.create(_settings(args))
    if services.repair_report.get("rows_dropped") or services.repair_report.get("files_removed"):
        _log(f"History check: {services.repair_report}")
    app = build_app(services)
    if args.mcp and importlib.util.find_spec("mcp") is None:
        raise ValueError("--mcp needs the MCP extra: pip install 'genai-studio[mcp]'")
    if args.dry_run:
        print(f"App built: {len(app.fns)} events; device {services.host.placement.describe()}; dry run, not serving.")
        return 0
    _log(f"GenAI Studio on {services.host.placement.describe()}; outputs in {services.history.root}")
    if services.settings.ray.enabled:  # connect to (or start) Ray while the page loads, not on the first click
        threading.Thread(target=_start_tier, args=(services,), daemon=True).start()
    launch(app, services, block=False, mcp_server=bool(args.mcp))
    stop = threading.Event()
    try:
        services.host.lanes.serve_here(stop)  # model work runs on this, the main, thread (studio/lanes.py)
    except KeyboardInterrupt:
        pass
    finally:
        services.host.lanes.drain("history")  # History writes already promised land before we go
        app.close()
    return 0


def _start_tier(services) -> None:
    try:
        services.host.ray_bridge.start()
    except Exception as exc:  # noqa: BLE001 - said once here; each request says it again and retries
        _log(str(exc))


def cmd_models(args) -> int:
    from pipelines.registry import Registry

    settings = _settings(args)
    registry = Registry(settings.cache_dir, offline=settings.offline)
    print(f"{'name':24} {'tab':6} {'source':8} {'in cache':9} license")
    for spec in registry.all():
        present = "yes" if registry.is_present(spec) else "no"
        print(f"{spec.name:24} {spec.modality:6} {spec.source:8} {present:9} {spec.license}")
    return 0


def cmd_fetch(args) -> int:
    from pipelines.registry import Registry

    settings = _settings(args)
    registry = Registry(settings.cache_dir, offline=settings.offline)
    names = args.names or [s.name for s in registry.all()]
    known = registry.all_by_name()
    for name in names:
        if name not in known:
            print(f"unknown model {name!r}; known: {', '.join(known)}", file=sys.stderr)
            return 2
        registry.fetch(known[name], log=_log)
        print(f"{name}: ready")
    return 0


def cmd_text(args) -> int:
    from pipelines.text import TextParams
    from studio.services import Services

    params = TextParams(
        prompt=args.prompt, mode=args.mode, system_prompt=args.system, max_new_tokens=args.max_new_tokens,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
        repetition_penalty=args.repetition_penalty, stop=tuple(s.replace("\\n", "\n") for s in args.stop),
        seed=args.seed,
    )
    services = Services.create(_settings(args))
    pipe = services.host.text_pipeline(args.model, log=_log)
    out = pipe(params, callback=lambda piece: print(piece, end="", flush=True))
    print()
    _log(f"[seed {out.seed} · {out.new_tokens} tokens · {out.tokens_per_second:.1f} tok/s · {out.finish_reason} · "
         f"{out.backend}]")
    return 0


def cmd_train(args) -> int:
    from pipelines.device import pick_device

    settings = _settings(args)
    if args.what == "digits":
        from pipelines.training.digits import DigitsTrainParams, train_digits

        metrics = train_digits(DigitsTrainParams(out_dir=args.out or Path("assets/models"), cache_dir=settings.cache_dir,
                                                 epochs=args.epochs, seed=args.seed,
                                                 device=pick_device(settings.device).type), log=_log)
        print(metrics)
        return 0
    from pipelines.training.emoji import EmojiTrainParams, train_emoji

    params = EmojiTrainParams(
        out_dir=args.out or Path("assets/models/emoji-ldm"), cache_dir=settings.cache_dir, vae_steps=args.vae_steps, unet_steps=args.unet_steps,
        finetune_steps=args.finetune_steps, cond_noise=args.cond_noise, seed=args.seed, tiny=args.tiny, device=pick_device(settings.device).type,
        unet_batch=args.unet_batch, unet_lr=args.unet_lr, checkpoint_every=args.checkpoint_every,
        link_text_encoder=not args.no_text_encoder, offline=settings.offline,
        sets=tuple(s.strip() for s in args.sets.split(",") if s.strip()),
        unet_channels=_ints("--unet-channels", args.unet_channels), vae_channels=_ints("--vae-channels", args.vae_channels),
    )
    train_emoji(params, log=_log)
    return 0


def cmd_keys(args) -> int:
    import time

    from studio.keys import ApiKeys

    keys = ApiKeys(_settings(args).outputs)
    if args.keys_command == "add":
        key = keys.add(args.name, guest=args.guest)
        _log(f"New {'guest' if args.guest else 'owner'} key for {args.name} (shown once; keep it secret):")
        print(key)
    elif args.keys_command == "list":
        for entry in keys.entries():
            made = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.created))
            print(f"{entry.name:24} {'guest' if entry.guest else 'owner':6} {made}  {entry.id}")
    else:
        removed = keys.revoke(args.name)
        if not removed:
            _log(f"no key for {args.name}")
            return 1
        print(f"revoked {removed} key(s) of {args.name}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in SUBCOMMANDS and argv[0] not in ("-h", "--help")):
        argv.insert(0, "launch")
    args = build_parser().parse_args(argv)
    handlers = {"launch": cmd_launch, "models": cmd_models, "fetch": cmd_fetch, "text": cmd_text, "train": cmd_train,
                "keys": cmd_keys}
    try:
        return handlers[args.command](args)
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
