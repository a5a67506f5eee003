"""The public API's registry (studio/api/registry.py): every endpoint is a module-level function registered with
@endpoint, callable directly with a Services, and what Gradio serves has exactly its public signature, docstring and
concurrency group."""

from __future__ import annotations

import inspect

import gradio as gr
import pytest
from PIL import Image

from studio.api import endpoint_functions, endpoints, explore, library, media
from studio.api.docs import EXAMPLES
from studio.api.registry import ENDPOINTS, bind, options, public_signature, shared_doc
from studio.caller import Caller, calling
from studio.config import Settings
from studio.services import Services


def _services(tmp_path, **logins) -> Services:
    return Services.create(Settings(outputs=tmp_path / "outputs", cache_dir=tmp_path / "cache", device="cpu",
                                    offline=True, content_credentials=False, watermark=False, **logins))


@pytest.fixture
def services(tmp_path):
    return _services(tmp_path)


def test_every_endpoint_is_a_registered_module_level_function():
    specs = endpoints()
    assert sorted(s.name for s in specs) == sorted(EXAMPLES)  # one documented example per endpoint
    for spec in specs:
        assert "<locals>" not in spec.fn.__qualname__, spec.name
        assert getattr(inspect.getmodule(spec.fn), spec.fn.__name__) is spec.fn  # importable by its name
        assert next(iter(inspect.signature(spec.fn).parameters)) == "services", spec.name
    assert ENDPOINTS["explore_move"].fn is explore.explore_move and ENDPOINTS["png_info"].fn is media.png_info


def test_what_gradio_serves_has_the_public_signature_docstring_and_kind_of_the_function(services):
    for name, served in endpoint_functions(services):
        fn = ENDPOINTS[name].fn
        assert "services" not in inspect.signature(served).parameters
        assert inspect.signature(served) == public_signature(fn)
        assert inspect.getdoc(served) == inspect.getdoc(fn)
        assert inspect.isgeneratorfunction(served) == inspect.isgeneratorfunction(fn), name
        hints = gr.utils.get_type_hints(served)  # what gr.api reads: every public parameter typed
        assert all(p in hints for p in inspect.signature(served).parameters), name


def test_concurrency_groups_and_who_may_call(services):
    assert options(ENDPOINTS["generate_image"], services) == {"concurrency_limit": services.host.image_slots,
                                                             "concurrency_id": "image"}
    assert options(ENDPOINTS["generate_text"], services)["concurrency_id"] == "text"
    assert options(ENDPOINTS["explore_move"], services) == {"concurrency_limit": 1, "concurrency_id": "model"}
    assert options(ENDPOINTS["gan_sample"], services) == {"concurrency_limit": 1, "concurrency_id": "model"}
    assert options(ENDPOINTS["cancel_image"], services) == {"queue": False}
    assert options(ENDPOINTS["png_info"], services) == {}
    assert ENDPOINTS["save_style"].owners_only == "save styles" and ENDPOINTS["models_fetch"].owners_only
    assert ENDPOINTS["generate_image"].counted and not ENDPOINTS["explore_move"].counted


def test_a_guarded_endpoint_refuses_a_request_without_a_caller_and_a_guest_where_owners_only(tmp_path):
    save_style = bind(ENDPOINTS["save_style"], _services(tmp_path, auth=(("o", "pw"),), guest_auth=(("g", "pw"),)))
    with pytest.raises(gr.Error, match="carries no user"):
        save_style("Ink")
    with calling(Caller("g", guest=True)), pytest.raises(gr.Error, match="Guests can't save styles"):
        save_style("Ink")
    with calling(Caller("o")):
        assert save_style("Ink", "{prompt}, ink")["name"] == "Ink"


def test_an_endpoint_is_called_directly_with_services(services, tmp_path):
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("parameters", "red heart\nSteps: 4, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64")
    path = tmp_path / "p.png"
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    assert media.png_info(services, {"path": str(path)})["prompt"] == "red heart"
    with calling(Caller("local")):
        assert library.history_list(services) == []
    rows = library.models_list(services)
    assert rows and {"name", "tab", "in_cache"} <= set(rows[0])


def test_the_explore_endpoints_share_one_documentation_of_the_look_parameters():
    from studio.api.docs import parameters

    for name in ("explore_walk", "explore_directions", "explore_move", "explore_map", "explore_breed",
                 "explore_variations"):
        rows = {row["name"]: row["meaning"] for row in parameters(ENDPOINTS[name].fn)}
        assert rows["cfg_scale"] == "diffusion: guidance, 0 to 30." and rows["kind"].startswith("gan, vae or")
        assert rows["ip_adapter"].endswith("needed for latent files that carry one.")
        assert "{diffusion look}" not in ENDPOINTS[name].fn.__doc__

    def undocumented():
        """No marker here."""

    with pytest.raises(ValueError, match="has no line"):
        shared_doc("{x}", "a: b")(undocumented)
