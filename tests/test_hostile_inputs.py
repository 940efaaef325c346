"""Hostile inputs (issue #20): every bad input is a clear error before any compute, and none is silently accepted.

Each case is ``(id, call, expected error class, phrase of the message)``. An autouse fixture makes every model load and
every UNet call fail the test, so a case passes only when it is refused *before* anything is loaded or run. The
malicious files (a pickle renamed ``.safetensors``, a TorchScript-like zip, a truncated file, …) are made in a
temporary folder.
"""
from __future__ import annotations

import json
import math
import os
import pickle
import shutil
import struct
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from unlearnkit import cli
from unlearnkit.core.errors import BadFileError, BadTypeError, UnlearnkitError

NAN, INF = float("nan"), float("inf")


def _tench():
    from unlearnkit.worlds.mini import catalogue

    return catalogue.concept("tench")


class NoModel:
    """A world / pipeline stand-in: touching any attribute means the bad input got past validation."""

    def __getattr__(self, name):
        raise AssertionError(f"the model was touched ({name!r}) although the input was bad")


NO_MODEL = NoModel()


def _methods():
    from unlearnkit import methods

    return methods


# ---------------------------------------------------------------------------------------------------------------------
# Method configs (unlearnkit/methods/): these pass once core.validation is applied to the method Configs; kept strict.
# ---------------------------------------------------------------------------------------------------------------------
METHOD_CONFIG_CASES = [
    ("ant scope='nope'", lambda f: _methods().check_hyperparameters("ant", scope="nope"), UnlearnkitError, "scope"),
    ("ant batch_size=2.5", lambda f: _methods().check_hyperparameters("ant", batch_size=2.5), UnlearnkitError,
     "batch_size=2.5"),
    ("ant seed='x'", lambda f: _methods().check_hyperparameters("ant", seed="x"), UnlearnkitError, "seed='x'"),
    ("ant lr=inf", lambda f: _methods().check_hyperparameters("ant", lr=INF), UnlearnkitError, "lr=inf"),
    ("ant lr='1e-4'", lambda f: _methods().check_hyperparameters("ant", lr="1e-4"), UnlearnkitError, "lr='1e-4'"),
    ("esd-x lr=inf", lambda f: _methods().check_hyperparameters("esd-x", lr=INF), UnlearnkitError, "lr=inf"),
    ("esd-x lr='1e-4'", lambda f: _methods().check_hyperparameters("esd-x", lr="1e-4"), UnlearnkitError, "lr='1e-4'"),
    ("UCEConfig(preserve_scale=nan)", lambda f: __import__("unlearnkit.methods.uce", fromlist=["UCEConfig"])
     .UCEConfig(preserve_scale=NAN), UnlearnkitError, "preserve_scale"),
    ("uce on [tench, tench]", lambda f: _methods().erase("uce", NO_MODEL, [_tench(), _tench()]), UnlearnkitError,
     "repeats"),
    ("erase_many uce [tench, tench]", lambda f: _methods().erase_many("uce", NO_MODEL, [_tench(), _tench()]),
     UnlearnkitError, "repeats"),
]
#: the same through the command line: (id, argv after "erase", phrase); exit status 2
METHOD_CLI_CASES = [
    ("erase --set lr=\"1e-4\"", ["--method", "esd-x", "--concept", "tench", "--set", 'lr="1e-4"'], "lr='1e-4'"),
    ("erase --set lr=Infinity", ["--method", "esd-x", "--concept", "tench", "--set", "lr=Infinity"], "lr=inf"),
]


# --------------------------------------------------------------------------------------------------- the guard
@pytest.fixture(autouse=True)
def no_model_load(monkeypatch):
    """Any model load, world load, UNet construction or call, or notebook run fails the test."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPModel

    from unlearnkit.worlds.mini import MiniWorld

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded or run although the input was bad")

    monkeypatch.setattr(cli, "load_world_for", refuse)
    monkeypatch.setattr(cli, "run_notebook", refuse)
    monkeypatch.setattr(MiniWorld, "load", refuse)
    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", refuse)
    monkeypatch.setattr(CLIPModel, "from_pretrained", refuse)
    monkeypatch.setattr(UNet2DConditionModel, "__init__", refuse)
    monkeypatch.setattr(UNet2DConditionModel, "forward", refuse)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


# ------------------------------------------------------------------------------------------------- crafted files
class Payload:
    """Unpickling this would call os.getcwd — harmless, but a weights-only loader must refuse it."""

    def __reduce__(self):
        return (os.getcwd, ())


def _safetensors_bytes(header: dict, data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Every malicious or broken file the cases use, by name."""
    root = tmp_path_factory.mktemp("hostile")
    out: dict[str, Path] = {"root": root}
    from unlearnkit.core.edits import Edit

    good = Edit({"down.attn2.to_k.weight": torch.ones(4, 4)}, name="good").save(root / "good" / "edit.safetensors")
    out["good_edit"] = good
    raw = good.read_bytes()

    def write(name: str, data: bytes) -> Path:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        out[name.split("/")[0].split(".")[0]] = path
        return path

    write("pickle.safetensors", pickle.dumps(Payload(), protocol=4))
    buffer = root / "torchsave.safetensors"
    torch.save({"down.attn2.to_k.weight": torch.ones(4, 4)}, buffer)
    out["torchsave"] = buffer
    with zipfile.ZipFile(root / "torchscript.safetensors", "w") as archive:
        archive.writestr("archive/code/__torch__/model.py", "def forward(self): ...")
        archive.writestr("archive/constants.pkl", b"\x80\x02}q\x00.")
        archive.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    out["torchscript"] = root / "torchscript.safetensors"
    shutil.copy(out["torchscript"], root / "torchscript.pt")
    out["torchscript_pt"] = root / "torchscript.pt"
    write("truncated.safetensors", raw[:-5])
    write("garbage.safetensors", b"this is not a safetensors file at all")
    write("empty_file.safetensors", b"")
    header = {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
    write("bad_header.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00" + b"{not json at all" + b"\0" * 8)
    write("metadata_not_map.safetensors", _safetensors_bytes({**header, "__metadata__": "oops"}, b"\0" * 8))
    save_file({"down.attn2.to_k.weight": torch.ones(4, 4)}, str(root / "metadata_not_json.safetensors"),
              metadata={"unlearnkit_metadata": "{this is not json"})
    out["metadata_not_json"] = root / "metadata_not_json.safetensors"
    save_file({"down.attn2.to_k.weight": torch.ones(4, 4)}, str(root / "metadata_list.safetensors"),
              metadata={"unlearnkit_metadata": "[1, 2]"})
    out["metadata_list"] = root / "metadata_list.safetensors"
    nan = torch.ones(4, 4)
    nan[1, 2] = NAN
    save_file({"down.attn2.to_k.weight": nan}, str(root / "nan.safetensors"))
    out["nan"] = root / "nan.safetensors"
    save_file({"down.attn2.to_k.weight": torch.full((4, 4), INF)}, str(root / "inf.safetensors"))
    out["inf"] = root / "inf.safetensors"
    Edit({}, name="empty").save(root / "empty_edit" / "edit.safetensors")
    out["empty_edit"] = root / "empty_edit" / "edit.safetensors"
    # an edit beside an erase.json that is not JSON
    (root / "bad_record").mkdir()
    shutil.copy(good, root / "bad_record" / "edit.safetensors")
    (root / "bad_record" / "erase.json").write_bytes(b"{\xff not json")
    out["bad_record"] = root / "bad_record" / "edit.safetensors"
    # text files that are not UTF-8
    latin = "case_number,prompt,evaluation_seed,evaluation_guidance,categories,hard,nudity_percentage,coco_id,class\n" \
            "1,caf\xe9 au lait,1,7.5,sexual,0,0.0,1,tench\n"
    for name in ("i2p_4703.csv", "coco_30k.csv", "imagenette_prompts.csv"):
        write(f"latin1/{name}", latin.encode("latin-1"))
    out["latin1"] = root / "latin1"
    write("concepts_latin1.json", '{"celebrity": "Beyonc\xe9"}'.encode("latin-1"))
    write("concepts_not_json.json", b"{celebrity: [}")
    # a file under a file: no folder can be made there (what a read-only --out is for root, who may write anywhere)
    write("a_file", b"x")
    out["unwritable"] = root / "a_file" / "out"
    return out


# ------------------------------------------------------------------------------------------------ small models
def tiny_unet() -> torch.nn.Module:
    """A module with the parameter the crafted edits target: ``down.attn2.to_k.weight`` [4, 4]."""
    module = torch.nn.Module()
    module.down = torch.nn.Module()
    module.down.attn2 = torch.nn.Module()
    module.down.attn2.to_k = torch.nn.Linear(4, 4, bias=False)
    return module


def tiny_pipe():
    def never(*args, **kwargs):
        raise AssertionError("a file was written although the edit was bad")

    return SimpleNamespace(unet=tiny_unet(), save_pretrained=never, save_lora_weights=never)


def _edit(deltas, name="e"):
    from unlearnkit.core.edits import Edit

    return Edit(deltas, name=name)


def _apply(edit, module):
    with edit.applied(module):
        raise AssertionError("the edited model ran although the edit was bad")


def _generate(prompts=("a photo",), seeds=(0,), **kwargs):
    from unlearnkit.sampling import SamplerSettings
    from unlearnkit.sampling.cache import generate_cached

    arguments = {"settings": SamplerSettings(), "cache_dir": kwargs.pop("cache_dir", "unused-cache"), **kwargs}
    return generate_cached(NO_MODEL, list(prompts) if not isinstance(prompts, str) else prompts, seeds, **arguments)


def _sample(**kwargs):
    from unlearnkit.sampling import SamplerSettings, sample_latents

    return sample_latents(NO_MODEL, ["a photo"], [0], kwargs.pop("settings", SamplerSettings()), **kwargs)


def _sampler(**kwargs):
    from unlearnkit.sampling import SamplerSettings

    return SamplerSettings(**kwargs)


def _sld(**kwargs):
    from unlearnkit.sampling.sld import SLDConfig

    return SLDConfig(**kwargs)


def _mini_world_instance():
    from unlearnkit.worlds.mini import MiniWorld

    return object.__new__(MiniWorld)   # its methods' argument checks run before any model is needed


def _load_world(*args, **kwargs):
    from unlearnkit.worlds import load_world

    return load_world(*args, **kwargs)


def _export(fmt, edit, **kwargs):
    from unlearnkit.export import export_edit

    return export_edit(edit, tiny_pipe(), "never-written", fmt, **kwargs)


def _mini_weights_with(tmp: Path, broken: str) -> Path:
    """A copy of the mini weights folder layout in which one evaluator file is ``broken``."""
    from unlearnkit.worlds.mini import WEIGHTS_DIR

    shutil.copytree(WEIGHTS_DIR / "evaluators", tmp / "evaluators", dirs_exist_ok=True)
    target = tmp / "evaluators" / "object_classifier.safetensors"
    if broken == "truncated":
        target.write_bytes(target.read_bytes()[:-100])
    elif broken == "pickle":
        target.write_bytes(pickle.dumps(Payload()))
    elif broken == "architecture":
        shutil.copy(tmp / "evaluators" / "style_classifier.safetensors", target)
    return tmp


def _mini_evaluators(tmp: Path, broken: str):
    from unlearnkit.worlds.mini.evaluators import MiniEvaluators

    return MiniEvaluators(_mini_weights_with(tmp, broken))


def _mini_pipeline_folder(tmp: Path, problem: str) -> Path:
    """A mini-world weights folder whose pipeline has ``problem``."""
    from unlearnkit.worlds.mini import WEIGHTS_DIR

    folder = tmp / "weights" / "pipeline"
    folder.mkdir(parents=True, exist_ok=True)
    index = json.loads((WEIGHTS_DIR / "pipeline" / "model_index.json").read_text())
    (folder / "unet").mkdir(exist_ok=True)
    unet = folder / "unet" / "diffusion_pytorch_model.safetensors"
    save_file({"w": torch.ones(8)}, str(unet))
    if problem == "truncated":
        unet.write_bytes(unet.read_bytes()[:-7])
    elif problem == "python file":
        (folder / "unet" / "unet_model.py").write_text("import os\n")
    elif problem == "custom component":
        index["unet"] = ["my_unet_module", "MyUNet"]
    elif problem == "pickle as safetensors":
        unet.write_bytes(pickle.dumps(Payload()))
    (folder / "model_index.json").write_text(json.dumps(index))
    return tmp / "weights"


def _load_mini_pipeline(tmp: Path, problem: str):
    from unlearnkit.worlds.mini import load_mini_pipeline

    return load_mini_pipeline(_mini_pipeline_folder(tmp, problem))


def _sd14_folder(tmp: Path, problem: str) -> Path:
    folder = tmp / "sd14"
    (folder / "unet").mkdir(parents=True, exist_ok=True)
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                          "unet": ["diffusers", "UNet2DConditionModel"]}))
    save_file({"w": torch.ones(2)}, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    if problem == "pipeline.py":
        (folder / "pipeline.py").write_text("import os\nos.system('echo pwned')\n")
    elif problem == "truncated text encoder":
        (folder / "text_encoder").mkdir()
        save_file({"w": torch.ones(64)}, str(folder / "text_encoder" / "model.safetensors"))
        path = folder / "text_encoder" / "model.safetensors"
        path.write_bytes(path.read_bytes()[:-10])
    elif problem == "auto_map":
        (folder / "text_encoder").mkdir()
        (folder / "text_encoder" / "config.json").write_text(json.dumps({"auto_map": {"AutoModel": "x.Model"}}))
    return folder


def _load_sd14(tmp: Path, problem: str):
    from unlearnkit.worlds.paper import load_sd14

    return load_sd14(_sd14_folder(tmp, problem))


def _weights_file(tmp: Path, kind: str) -> Path:
    """A weights file for an evaluator: of another architecture, a full pickle, or a TorchScript-like zip."""
    if kind == "architecture":
        path = tmp / "other.safetensors"
        save_file({"weight": torch.ones(3, 3)}, str(path))
    elif kind == "pickle":
        path = tmp / "weights.pth"
        torch.save({"fc.weight": Payload()}, path)
    elif kind == "torchscript zip":
        path = tmp / "ViT-B-32.pt"
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/code/__torch__/m.py", "def forward(self): ...")
            archive.writestr("archive/constants.pkl", b"\x80\x02}q\x00.")
    return path


def _open_clip(tmp: Path, kind: str, **kwargs):
    from unlearnkit.metrics.clip_score import OpenCLIPScorer

    return OpenCLIPScorer(_weights_file(tmp, kind), **kwargs)


def _resnet(tmp: Path, kind: str, **kwargs):
    from unlearnkit.metrics.classification import ResNet50Classifier

    return ResNet50Classifier(_weights_file(tmp, kind), **kwargs)


def _data(loader: str, *args, **kwargs):
    import unlearnkit.data as data

    return getattr(data, loader)(*args, **kwargs)


def _attack_config(name: str, **kwargs):
    import unlearnkit.attacks.concept_vector as cv
    import unlearnkit.attacks.soft_prompt as sp
    import unlearnkit.attacks.success as su

    return {"ring": cv.ConceptVectorConfig, "soft": sp.SoftPromptConfig, "attack": su.AttackConfig}[name](**kwargs)


# ------------------------------------------------------------------------------------------------- API cases
# (id, call(files, tmp_path), expected class, phrase of the message)
API_CASES = [
    # sampler settings
    ("SamplerSettings(guidance_scale=nan)", lambda f, t: _sampler(guidance_scale=NAN), UnlearnkitError,
     "guidance_scale=nan"),
    ("SamplerSettings(guidance_scale=inf)", lambda f, t: _sampler(guidance_scale=INF), UnlearnkitError,
     "guidance_scale=inf"),
    ("SamplerSettings(guidance_scale='7.5')", lambda f, t: _sampler(guidance_scale="7.5"), BadTypeError,
     "without quotes"),
    ("SamplerSettings(num_inference_steps=2.5)", lambda f, t: _sampler(num_inference_steps=2.5), BadTypeError,
     "num_inference_steps=2.5"),
    ("SamplerSettings(num_inference_steps=True)", lambda f, t: _sampler(num_inference_steps=True), BadTypeError,
     "num_inference_steps=True"),
    ("SamplerSettings(num_inference_steps=0)", lambda f, t: _sampler(num_inference_steps=0), UnlearnkitError,
     "in [1, 1000]"),
    ("SamplerSettings(num_inference_steps=5000)", lambda f, t: _sampler(num_inference_steps=5000), UnlearnkitError,
     "in [1, 1000]"),
    ("SamplerSettings(eta=nan)", lambda f, t: _sampler(eta=NAN), UnlearnkitError, "eta=nan"),
    ("SamplerSettings(eta=1.5)", lambda f, t: _sampler(eta=1.5), UnlearnkitError, "in [0, 1]"),
    # SLD
    ("SLDConfig(sld_guidance_scale=nan)", lambda f, t: _sld(sld_guidance_scale=NAN), UnlearnkitError,
     "sld_guidance_scale"),
    ("SLDConfig(sld_mom_beta=1)", lambda f, t: _sld(sld_mom_beta=1), UnlearnkitError, "[0, 1)"),
    ("SLDConfig(sld_warmup_steps=2.5)", lambda f, t: _sld(sld_warmup_steps=2.5), BadTypeError, "sld_warmup_steps"),
    ("SLDConfig(sld_threshold='x')", lambda f, t: _sld(sld_threshold="x"), BadTypeError, "sld_threshold"),
    # generate_cached: prompts, seeds, batch size
    ("seed 1.7", lambda f, t: _generate(seeds=[1.7]), BadTypeError, "seeds[0]=1.7"),
    ("seed 2**63", lambda f, t: _generate(seeds=[2 ** 63]), UnlearnkitError, "[0, 2**63)"),
    ("seed -1", lambda f, t: _generate(seeds=[-1]), UnlearnkitError, "[0, 2**63)"),
    ("seed '3'", lambda f, t: _generate(seeds=["3"]), BadTypeError, "seeds[0]='3'"),
    ("seed True", lambda f, t: _generate(seeds=[True]), BadTypeError, "seeds[0]=True"),
    ("seeds a single int", lambda f, t: _generate(seeds=3), BadTypeError, "list of integer seeds"),
    ("batch_size=2.5", lambda f, t: _generate(batch_size=2.5), BadTypeError, "batch_size=2.5"),
    ("batch_size=10**6", lambda f, t: _generate(batch_size=10 ** 6), UnlearnkitError, "in [1, 4096]"),
    ("batch_size=0", lambda f, t: _generate(batch_size=0), UnlearnkitError, "batch_size=0"),
    ("prompts one string", lambda f, t: _generate(prompts="a photo", seeds=[0]), BadTypeError, "not one string"),
    ("prompts not strings", lambda f, t: _generate(prompts=[3], seeds=[0]), BadTypeError, "prompts must be strings"),
    ("prompts empty", lambda f, t: _generate(prompts=[], seeds=[]), UnlearnkitError, "prompts is empty"),
    ("seed count", lambda f, t: _generate(prompts=["a", "b"], seeds=[0]), UnlearnkitError, "one seed per prompt"),
    ("settings a dict", lambda f, t: _generate(settings={"guidance_scale": 7.5}), BadTypeError, "SamplerSettings"),
    ("cache_dir None", lambda f, t: _generate(cache_dir=None), BadTypeError, "cache_dir"),
    ("sample_latents snapshot 2.5", lambda f, t: _sample(snapshot_steps=(2.5,)), BadTypeError, "snapshot step"),
    ("sample_latents batch_size=-3", lambda f, t: _sample(batch_size=-3), UnlearnkitError, "batch_size=-3"),
    ("cfg_reversal t'=nan", lambda f, t: __import__("unlearnkit.sampling", fromlist=["x"])
     .cfg_reversal_guidance(7.5, NAN), UnlearnkitError, "t'=nan"),
    ("cfg_guidance scale='7.5'", lambda f, t: __import__("unlearnkit.sampling", fromlist=["x"]).cfg_guidance("7.5"),
     BadTypeError, "guidance scale"),
    # diffusion primitives
    ("validate_paper_step(nan)", lambda f, t: __import__("unlearnkit.core.diffusion", fromlist=["x"])
     .validate_paper_step(NAN), UnlearnkitError, "t'=nan"),
    ("paper_step_to_train_t('43')", lambda f, t: __import__("unlearnkit.core.diffusion", fromlist=["x"])
     .paper_step_to_train_t("43"), BadTypeError, "t'='43'"),
    ("sample_train_timesteps(2.5, 0, 10)", lambda f, t: __import__("unlearnkit.core.diffusion", fromlist=["x"])
     .sample_train_timesteps(2.5, 0, 10), BadTypeError, "n=2.5"),
    # edits: construction, apply, load
    ("Edit delta not a tensor", lambda f, t: _edit({"w": [1.0]}), BadTypeError, "must be a tensor"),
    ("Edit name not a string", lambda f, t: _edit({"w": torch.ones(1)}, name=None), BadTypeError, "edit name"),
    ("Edit.scaled(nan)", lambda f, t: _edit({"w": torch.ones(1)}).scaled(NAN), UnlearnkitError, "factor=nan"),
    ("Edit.norm_p(-1)", lambda f, t: _edit({"w": torch.ones(1)}).norm_p(-1), UnlearnkitError, "p=-1"),
    ("applied: NaN delta", lambda f, t: _apply(_edit({"down.attn2.to_k.weight": torch.full((4, 4), NAN)}),
                                                tiny_unet()), UnlearnkitError, "'down.attn2.to_k.weight'"),
    ("applied: scale=inf", lambda f, t: _apply_scaled(INF), UnlearnkitError, "scale=inf"),
    ("applied: another model's names", lambda f, t: _apply(_edit({"up.attn2.to_v.weight": torch.ones(4, 4)}),
                                                             tiny_unet()), UnlearnkitError, "made for another model"),
    ("applied: another model's shapes", lambda f, t: _apply(_edit({"down.attn2.to_k.weight": torch.ones(8, 4)}),
                                                              tiny_unet()), UnlearnkitError, "made for another model"),
    ("Edit.load pickle renamed .safetensors", lambda f, t: _load_edit(f["pickle"]), BadFileError, "refused for safety"),
    ("Edit.load torch.save file", lambda f, t: _load_edit(f["torchsave"]), BadFileError, "refused for safety"),
    ("Edit.load zip with archive/code/", lambda f, t: _load_edit(f["torchscript"]), BadFileError, "TorchScript"),
    ("Edit.load truncated", lambda f, t: _load_edit(f["truncated"]), BadFileError, "truncated"),
    ("Edit.load garbage", lambda f, t: _load_edit(f["garbage"]), BadFileError, "not a safetensors file"),
    ("Edit.load empty file", lambda f, t: _load_edit(f["empty_file"]), BadFileError, "not a safetensors file"),
    ("Edit.load header not JSON", lambda f, t: _load_edit(f["bad_header"]), BadFileError, "corrupt safetensors header"),
    ("Edit.load __metadata__ not a map", lambda f, t: _load_edit(f["metadata_not_map"]), BadFileError, "__metadata__"),
    ("Edit.load metadata not JSON", lambda f, t: _load_edit(f["metadata_not_json"]), BadFileError, "is not JSON"),
    ("Edit.load metadata a list", lambda f, t: _load_edit(f["metadata_list"]), BadFileError, "not a JSON object"),
    ("Edit.load NaN", lambda f, t: _load_edit(f["nan"]), BadFileError, "'down.attn2.to_k.weight' holds 1 non-finite"),
    ("Edit.load inf", lambda f, t: _load_edit(f["inf"]), BadFileError, "non-finite"),
    # export
    ("export lora: empty edit", lambda f, t: _export("lora", _edit({})), UnlearnkitError, "nothing to export"),
    ("export diffusers: empty edit", lambda f, t: _export("diffusers", _edit({})), UnlearnkitError,
     "nothing to export"),
    ("export lora: another model's shapes", lambda f, t: _export("lora", _edit({"down.attn2.to_k.weight":
                                                                                torch.ones(8, 8)})),
     UnlearnkitError, "made for another model"),
    ("export lora: another model's names", lambda f, t: _export("lora", _edit({"mid.attn1.to_q.weight":
                                                                               torch.ones(4, 4)})),
     UnlearnkitError, "made for another model"),
    ("export diffusers: NaN edit", lambda f, t: _export("diffusers", _edit({"down.attn2.to_k.weight":
                                                                            torch.full((4, 4), NAN)})),
     UnlearnkitError, "non-finite"),
    ("export lora: rank=2.5", lambda f, t: _export("lora", _edit({"down.attn2.to_k.weight": torch.ones(4, 4)}),
                                                   rank=2.5), BadTypeError, "rank=2.5"),
    ("export format 'onnx'", lambda f, t: _export("onnx", _edit({"down.attn2.to_k.weight": torch.ones(4, 4)})),
     UnlearnkitError, "'onnx'"),
    # worlds
    ("load_world('moon')", lambda f, t: _load_world("moon"), UnlearnkitError, "'moon'"),
    ("load_world device='banana'", lambda f, t: _load_world("mini", device="banana"), UnlearnkitError, "'banana'"),
    ("load_world device=3", lambda f, t: _load_world("mini", device=3), BadTypeError, "device=3"),
    ("load_world device='cuda:99'", lambda f, t: _load_world("mini", device="cuda:99"), UnlearnkitError, "cuda:99"),
    ("load_world device='xla'", lambda f, t: _load_world("mini", device="xla"), UnlearnkitError, "not supported"),
    ("catalogue('moon')", lambda f, t: __import__("unlearnkit.worlds", fromlist=["x"]).catalogue("moon"),
     UnlearnkitError, "'moon'"),
    ("mini evaluation_prompts n=2.5", lambda f, t: _mini_world_instance().evaluation_prompts("tench", 2.5),
     BadTypeError, "n=2.5"),
    ("mini evaluation_prompts first_seed=-4", lambda f, t: _mini_world_instance().evaluation_prompts("tench", 2, -4),
     UnlearnkitError, "first_seed=-4"),
    ("mini i2p_prompts limit=0", lambda f, t: _mini_world_instance().i2p_prompts(limit=0), UnlearnkitError,
     "limit=0"),
    ("mini i2p_prompts subset='violence'", lambda f, t: _mini_world_instance().i2p_prompts(subset="violence"),
     UnlearnkitError, "'violence'"),
    ("mini coco_prompts n='10'", lambda f, t: _mini_world_instance().coco_prompts("10"), BadTypeError, "n='10'"),
    ("PaperWorld nsfw_threshold=nan", lambda f, t: __import__("unlearnkit.worlds.paper", fromlist=["x"])
     .PaperWorld(pipe=NO_MODEL, nsfw_threshold=NAN), UnlearnkitError, "nsfw_threshold"),
    ("PaperWorld class_match='fuzzy'", lambda f, t: __import__("unlearnkit.worlds.paper", fromlist=["x"])
     .PaperWorld(pipe=NO_MODEL, class_match="fuzzy"), UnlearnkitError, "'fuzzy'"),
    ("build_sd14_architecture seed=-1", lambda f, t: __import__("unlearnkit.worlds.paper", fromlist=["x"])
     .build_sd14_architecture(seed=-1), UnlearnkitError, "seed=-1"),
    ("mini evaluator truncated", lambda f, t: _mini_evaluators(t, "truncated"), BadFileError, "truncated"),
    ("mini evaluator a pickle", lambda f, t: _mini_evaluators(t, "pickle"), BadFileError, "refused for safety"),
    ("mini evaluator of another architecture", lambda f, t: _mini_evaluators(t, "architecture"), BadFileError,
     "does not hold the weights of the mini object classifier"),
    ("mini pipeline truncated UNet", lambda f, t: _load_mini_pipeline(t, "truncated"), BadFileError, "truncated"),
    ("mini pipeline pickle as UNet", lambda f, t: _load_mini_pipeline(t, "pickle as safetensors"), BadFileError,
     "refused for safety"),
    ("mini pipeline with a .py file", lambda f, t: _load_mini_pipeline(t, "python file"), BadFileError,
     "refused for safety"),
    ("mini pipeline custom component", lambda f, t: _load_mini_pipeline(t, "custom component"), BadFileError,
     "custom code is refused"),
    ("SD v1.4 folder with pipeline.py", lambda f, t: _load_sd14(t, "pipeline.py"), BadFileError, "refused for safety"),
    ("SD v1.4 folder with auto_map", lambda f, t: _load_sd14(t, "auto_map"), BadFileError, "remote code"),
    ("SD v1.4 truncated text encoder", lambda f, t: _load_sd14(t, "truncated text encoder"), BadFileError,
     "truncated"),
    ("load_sd14 device='banana'", lambda f, t: __import__("unlearnkit.worlds.paper", fromlist=["x"])
     .load_sd14(str(t), device="banana"), UnlearnkitError, "'banana'"),
    # evaluators
    ("open_clip: TorchScript zip not declared", lambda f, t: _open_clip(t, "torchscript zip"), BadFileError,
     "weights_format='torchscript'"),
    ("open_clip: declared TorchScript that is not", lambda f, t: _open_clip(t, "torchscript zip",
                                                                             weights_format="torchscript"),
     BadFileError, "not a TorchScript archive"),
    ("open_clip: a full pickle", lambda f, t: _open_clip(t, "pickle"), BadFileError, "refused for safety"),
    ("open_clip: weights_format='pickle'", lambda f, t: _open_clip(t, "architecture", weights_format="pickle"),
     UnlearnkitError, "'pickle'"),
    ("open_clip: batch_size=0", lambda f, t: _open_clip(t, "architecture", batch_size=0), UnlearnkitError,
     "batch_size=0"),
    ("ResNet-50: another architecture", lambda f, t: _resnet(t, "architecture"), BadFileError,
     "does not hold the weights of torchvision ResNet-50"),
    ("ResNet-50: a full pickle", lambda f, t: _resnet(t, "pickle"), BadFileError, "refused for safety"),
    ("ResNet-50: match='fuzzy'", lambda f, t: _resnet(t, "architecture", match="fuzzy"), UnlearnkitError, "'fuzzy'"),
    ("count_nudity threshold=nan", lambda f, t: __import__("unlearnkit.metrics.nsfw", fromlist=["x"])
     .count_nudity([], ["A"], threshold=NAN), UnlearnkitError, "threshold=nan"),
    ("count_nudity threshold='0.6'", lambda f, t: __import__("unlearnkit.metrics.nsfw", fromlist=["x"])
     .count_nudity([], ["A"], threshold="0.6"), BadTypeError, "threshold='0.6'"),
    # prompt sets and concept lists
    ("I2P CSV not UTF-8", lambda f, t: _data("load_i2p", f["latin1"]), BadFileError, "not UTF-8"),
    ("COCO CSV not UTF-8", lambda f, t: _data("load_coco30k", f["latin1"]), BadFileError, "not UTF-8"),
    ("Imagenette CSV not UTF-8", lambda f, t: _data("load_imagenette_prompts", f["latin1"]), BadFileError,
     "not UTF-8"),
    ("concept list not UTF-8", lambda f, t: _data("load_concept_list", "artist", f["concepts_latin1"]), BadFileError,
     "not UTF-8"),
    ("concept list not JSON", lambda f, t: _data("load_concept_list", "artist", f["concepts_not_json"]),
     BadFileError, "not valid JSON"),
    # attacks
    ("ConceptVectorConfig(eta=nan)", lambda f, t: _attack_config("ring", eta=NAN), UnlearnkitError, "eta=nan"),
    ("ConceptVectorConfig(eta='3')", lambda f, t: _attack_config("ring", eta="3"), BadTypeError, "eta='3'"),
    ("ConceptVectorConfig(budget=2.5)", lambda f, t: _attack_config("ring", budget=2.5), BadTypeError, "budget"),
    ("SoftPromptConfig(lr=inf)", lambda f, t: _attack_config("soft", lr=INF), UnlearnkitError, "lr=inf"),
    ("SoftPromptConfig(weight_decay=nan)", lambda f, t: _attack_config("soft", weight_decay=NAN), UnlearnkitError,
     "weight_decay=nan"),
    ("SoftPromptConfig(timesteps=(0.5, 10))", lambda f, t: _attack_config("soft", timesteps=(0.5, 10)), BadTypeError,
     "timesteps"),
    ("AttackConfig(vocabulary=0)", lambda f, t: _attack_config("attack", vocabulary=0), UnlearnkitError,
     "vocabulary=0"),
]


def _apply_scaled(scale):
    edit = _edit({"down.attn2.to_k.weight": torch.ones(4, 4)})
    with edit.applied(tiny_unet(), scale=scale):
        raise AssertionError("the edited model ran although the scale was bad")


def _load_edit(path):
    from unlearnkit.core.edits import Edit

    return Edit.load(path)


# ------------------------------------------------------------------------------------------------- CLI cases
# (id, argv(files, tmp_path), phrase of the one-line message); every one exits with status 2 before any model load
CLI_CASES = [
    ("erase --device banana", lambda f, t: ["erase", "--method", "uce", "--concept", "tench", "--device", "banana",
                                            "--out", str(t / "o")], "--device='banana'"),
    ("erase --device cuda without a GPU", lambda f, t: ["erase", "--method", "uce", "--concept", "tench", "--device",
                                                        "cuda", "--out", str(t / "o")], "no CUDA GPU"),
    ("erase --device cuda:3 without a GPU", lambda f, t: ["erase", "--method", "uce", "--concept", "tench",
                                                          "--device", "cuda:3", "--out", str(t / "o")], "no CUDA GPU"),
    ("erase unknown concept", lambda f, t: ["erase", "--method", "uce", "--concept", "unicorn", "--out",
                                            str(t / "o")], "unlearnkit concepts"),
    ("erase --out unwritable", lambda f, t: ["erase", "--method", "uce", "--concept", "tench", "--out",
                                             str(f["unwritable"])], "not writable"),
    ("erase --model code-bearing folder", lambda f, t: ["erase", "--method", "uce", "--concept", "tench", "--model",
                                                        str(_sd14_folder(t, "pipeline.py")), "--out", str(t / "o")],
     "refused for safety"),
    ("export a pickle", lambda f, t: ["export", str(f["pickle"]), "--format", "lora", "--out", str(t / "o")],
     "refused for safety"),
    ("export a torch.save file", lambda f, t: ["export", str(f["torchsave"]), "--format", "lora", "--out",
                                               str(t / "o")], "refused for safety"),
    ("export a TorchScript-like zip", lambda f, t: ["export", str(f["torchscript"]), "--format", "diffusers", "--out",
                                                    str(t / "o")], "TorchScript"),
    ("export truncated", lambda f, t: ["export", str(f["truncated"]), "--format", "lora", "--out", str(t / "o")],
     "truncated"),
    ("export garbage", lambda f, t: ["export", str(f["garbage"]), "--format", "lora", "--out", str(t / "o")],
     "not a safetensors file"),
    ("export metadata not JSON", lambda f, t: ["export", str(f["metadata_not_json"]), "--format", "lora", "--out",
                                               str(t / "o")], "is not JSON"),
    ("export NaN edit", lambda f, t: ["export", str(f["nan"]), "--format", "diffusers", "--out", str(t / "o")],
     "non-finite"),
    ("export empty edit", lambda f, t: ["export", str(f["empty_edit"]), "--format", "diffusers", "--out",
                                        str(t / "o")], "nothing to export"),
    ("export --device banana", lambda f, t: ["export", str(f["good_edit"]), "--format", "lora", "--device", "banana",
                                             "--out", str(t / "o")], "'banana'"),
    ("export --out unwritable", lambda f, t: ["export", str(f["good_edit"]), "--format", "lora", "--out",
                                              str(f["unwritable"])], "not writable"),
    ("evaluate a pickle", lambda f, t: ["evaluate", str(f["pickle"]), "--concept", "tench", "--out", str(t / "o")],
     "refused for safety"),
    ("evaluate unknown --kept", lambda f, t: ["evaluate", str(f["good_edit"]), "--concept", "tench", "--kept",
                                              "unicorn", "--out", str(t / "o")], "'unicorn'"),
    ("evaluate erase.json not JSON", lambda f, t: ["evaluate", str(f["bad_record"]), "--out", str(t / "o")],
     "not UTF-8"),
    ("evaluate --out unwritable", lambda f, t: ["evaluate", str(f["good_edit"]), "--concept", "tench", "--out",
                                                str(f["unwritable"])], "not writable"),
    ("evaluate --device cuda without a GPU", lambda f, t: ["evaluate", str(f["good_edit"]), "--concept", "tench",
                                                           "--device", "cuda", "--out", str(t / "o")], "no CUDA GPU"),
    ("reproduce --device banana", lambda f, t: ["reproduce", "--preset", "mini", "--device", "banana",
                                                "--notebooks-dir", str(_notebooks(t))], "'banana'"),
    ("reproduce --device cuda without a GPU", lambda f, t: ["reproduce", "--preset", "mini", "--device", "cuda",
                                                            "--notebooks-dir", str(_notebooks(t))], "no CUDA GPU"),
    ("reproduce --output-dir unwritable", lambda f, t: ["reproduce", "--preset", "mini", "--notebooks-dir",
                                                        str(_notebooks(t)), "--output-dir", str(f["unwritable"])],
     "not writable"),
]


def _notebooks(tmp: Path) -> Path:
    import nbformat

    folder = tmp / "notebooks"
    folder.mkdir(exist_ok=True)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("x = 1")]
    nbformat.write(notebook, str(folder / "01_cfg_reversal.ipynb"))
    return folder


def run_cli(argv, capsys) -> tuple[int, str]:
    """``unlearnkit argv``: (exit status, stderr)."""
    try:
        status = cli.main(argv)
    except SystemExit as exit_info:
        status = exit_info.code
    return status, capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- the tests
def _ids(cases):
    return [case[0] for case in cases]


@pytest.mark.parametrize("case_id, call, error, phrase", API_CASES, ids=_ids(API_CASES))
def test_a_bad_api_input_is_refused_before_any_compute(case_id, call, error, phrase, files, tmp_path):
    with pytest.raises(error) as caught:
        call(files, tmp_path)
    assert isinstance(caught.value, ValueError), "every unlearnkit error is a ValueError"
    assert phrase in str(caught.value), f"{phrase!r} not in {str(caught.value)!r}"


@pytest.mark.parametrize("case_id, argv, phrase", CLI_CASES, ids=_ids(CLI_CASES))
def test_a_bad_command_line_is_one_line_and_status_2_before_any_model_load(case_id, argv, phrase, files, tmp_path,
                                                                           no_gpu, capsys):
    status, stderr = run_cli(argv(files, tmp_path), capsys)
    assert status == 2, stderr
    assert phrase in stderr, stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr


@pytest.mark.parametrize("case_id, call, error, phrase", METHOD_CONFIG_CASES, ids=_ids(METHOD_CONFIG_CASES))
def test_a_bad_method_config_is_refused_before_any_compute(case_id, call, error, phrase, files):
    with pytest.raises(error) as caught:
        call(files)
    assert phrase in str(caught.value), f"{phrase!r} not in {str(caught.value)!r}"


@pytest.mark.parametrize("case_id, argv, phrase", METHOD_CLI_CASES, ids=_ids(METHOD_CLI_CASES))
def test_a_bad_method_setting_on_the_command_line_names_the_field(case_id, argv, phrase, tmp_path, capsys):
    status, stderr = run_cli(["erase", *argv, "--out", str(tmp_path / "o")], capsys)
    assert status == 2 and phrase in stderr, stderr


def test_there_are_at_least_sixty_hostile_cases():
    assert len(API_CASES) + len(CLI_CASES) + len(METHOD_CONFIG_CASES) + len(METHOD_CLI_CASES) >= 60


# ------------------------------------------------------------------------------------------ behaviour around errors
def test_debug_shows_the_traceback_before_or_after_the_command(tmp_path):
    argv = ["erase", "--method", "uce", "--concept", "tench", "--device", "banana", "--out", str(tmp_path / "o")]
    with pytest.raises(cli.UsageError, match="banana"):
        cli.main(["--debug", *argv])
    with pytest.raises(cli.UsageError, match="banana"):
        cli.main([*argv, "--debug"])


def test_a_failed_run_is_one_line_with_status_1(tmp_path, monkeypatch, capsys):
    def boom(*args, **kwargs):
        raise RuntimeError("the disk caught fire")

    monkeypatch.setattr(cli, "load_world_for", boom)
    status, stderr = run_cli(["erase", "--method", "uce", "--concept", "tench", "--out", str(tmp_path / "o")], capsys)
    assert status == 1
    assert "failed: RuntimeError: the disk caught fire" in stderr and "--debug" in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1
    with pytest.raises(RuntimeError, match="fire"):
        cli.main(["--debug", "erase", "--method", "uce", "--concept", "tench", "--out", str(tmp_path / "o2")])


def test_a_failed_reproduce_names_only_files_that_exist(tmp_path, monkeypatch, capsys):
    def dies_before_writing(notebook, executed, *args, **kwargs):
        raise RuntimeError("kernel died")

    monkeypatch.setattr(cli, "run_notebook", dies_before_writing)
    status, stderr = run_cli(["reproduce", "--preset", "mini", "--notebooks-dir", str(_notebooks(tmp_path)),
                              "--output-dir", str(tmp_path / "reports")], capsys)
    executed = tmp_path / "reports" / "mini" / "executed" / "01_cfg_reversal.ipynb"
    assert status == 1 and "kernel died" in stderr
    assert not executed.exists() and str(executed) not in stderr
    assert "no executed notebook was written" in stderr


def test_the_output_folder_is_checked_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """Nothing lost: an unwritable --out stops erase before the (patched) world load, not after the erasure."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    status, stderr = run_cli(["erase", "--method", "uce", "--concept", "tench", "--out", str(blocker / "o")], capsys)
    assert status == 2 and "not writable" in stderr


def test_the_open_clip_loader_never_unpickles(tmp_path, monkeypatch):
    """Every torch.load the evaluators make is weights-only; no open_clip loader with a pickle fallback is used."""
    import open_clip

    from unlearnkit.metrics.clip_score import OpenCLIPScorer

    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    def no_openai_loader(*args, **kwargs):
        raise AssertionError("open_clip.load_openai_model falls back to a full torch.load")

    monkeypatch.setattr(torch, "load", recording_load)
    monkeypatch.setattr(open_clip, "load_openai_model", no_openai_loader)
    for kind in ("pickle", "torchscript zip"):
        with pytest.raises(BadFileError):
            OpenCLIPScorer(_weights_file(tmp_path, kind))
    with pytest.raises(BadFileError):
        OpenCLIPScorer(_weights_file(tmp_path, "torchscript zip"), weights_format="torchscript")
    assert calls and all(flag is True for flag in calls)


def test_valid_inputs_next_to_the_hostile_ones_still_pass(files, tmp_path):
    """The checks refuse only what is bad: integral numpy seeds, a finite edit, an SD folder whose UNet is .bin."""
    import numpy as np

    from unlearnkit.core.edits import Edit
    from unlearnkit.core.files import check_code_free_folder
    from unlearnkit.core.validation import check_device, check_number, check_prompts_and_seeds, check_seed
    from unlearnkit.worlds.paper import _check_local_sd14_folder

    assert check_prompts_and_seeds(["a", "b"], [np.int64(3), 2 ** 63 - 1]) == (["a", "b"], [3, 2 ** 63 - 1])
    assert check_seed(0) == 0 and check_number(np.float32(0.5), "x", minimum=0, maximum=1) == 0.5
    assert check_device("cpu").type == "cpu"
    edit = Edit.load(files["good_edit"])
    module = tiny_unet()
    before = module.down.attn2.to_k.weight.detach().clone()
    with edit.applied(module):
        assert torch.equal(module.down.attn2.to_k.weight, before + 1)
    assert torch.equal(module.down.attn2.to_k.weight, before)
    assert math.isinf(float("inf")) and edit.norm_p(float("inf")) == 1.0
    folder = tmp_path / "sd14-bin"
    for component, name in (("unet", "diffusion_pytorch_model.bin"), ("vae", "diffusion_pytorch_model.safetensors"),
                            ("text_encoder", "model.safetensors")):
        (folder / component).mkdir(parents=True)
        if name.endswith(".bin"):
            torch.save({"w": torch.ones(2)}, folder / component / name)
        else:
            save_file({"w": torch.ones(2)}, str(folder / component / name))
        (folder / component / "config.json").write_text("{}")
    (folder / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"],
                                                         "text_encoder": ["transformers", "CLIPTextModel"]}))
    check_code_free_folder(folder, "an SD folder")
    assert [p.name for p in _check_local_sd14_folder(folder)] == ["diffusion_pytorch_model.bin"]
