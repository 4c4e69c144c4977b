"""P1 (inference, fp32) and P4 (the CPU deployment path's speed), timed together against the same timm runs.

Candidates, all backbones without a classification head, on one pre-made batch (32 × 1 × 224², normal noise),
under `torch.inference_mode()`:

* `SpcxrModel` (fp32, SDPA attention through transformers' attention interface);
* timm `vit_small_patch16_224` with `in_chans=1` and `num_classes=0` (the same single-channel input; timm runs
  `F.scaled_dot_product_attention` directly);
* transformers `ViTModel` of the same size (384 wide, 12 blocks, 6 heads, MLP 1536, 1 channel, no pooler, SDPA);
* on CPU (P4, its own interleaved group against its own timm fp32 runs): every deployment path this machine has —
  `SpcxrModel` fp32, fused fp32 oneDNN blocks, bf16 + fused oneDNN (where bf16 is native), dynamic int8 Linear
  layers (ours and timm, the usual recipe), and the runtime exports (`benchmarks/runtimes.py`: onnxruntime fp32 and
  static int8, OpenVINO fp32 and NNCF int8, where installed) of a classifier with the same backbone weights (its
  2-label head is noise next to the backbone; static int8 ranges calibrated on noise batches: speed only, P4's
  accuracy rows in `deploy_metric.py` calibrate on phantoms);
* on CUDA: `SpcxrModel` and timm cast to bf16 as well.
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

from .common import VIT_S_GMAC, Row, Settings, cuda_sync, interleaved, matmul_peak_gflops, median


def vit_sizes(settings: Settings) -> dict:
    if settings.quick:
        return dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                    image_size=settings.image_size, reconstruction_layers=[1, 2], segmentation_skip_layers=[1, 1, 2])
    return dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                image_size=settings.image_size)


def build_models(settings: Settings) -> dict:
    import timm
    import torch
    from transformers import ViTConfig, ViTModel

    from spcxr_hub import SpcxrConfig, SpcxrModel

    sizes = vit_sizes(settings)
    torch.manual_seed(0)
    ours = SpcxrModel(SpcxrConfig(**sizes)).eval()
    peer = timm.models.vision_transformer.VisionTransformer(
        img_size=sizes["image_size"], patch_size=16, in_chans=1, embed_dim=sizes["hidden_size"],
        depth=sizes["num_hidden_layers"], num_heads=sizes["num_attention_heads"],
        mlp_ratio=sizes["intermediate_size"] / sizes["hidden_size"], qkv_bias=True, num_classes=0,
    ).eval() if settings.quick else timm.create_model("vit_small_patch16_224", in_chans=1, num_classes=0).eval()
    hf = ViTModel(ViTConfig(hidden_size=sizes["hidden_size"], num_hidden_layers=sizes["num_hidden_layers"],
                            num_attention_heads=sizes["num_attention_heads"],
                            intermediate_size=sizes["intermediate_size"], image_size=sizes["image_size"],
                            patch_size=16, num_channels=1, layer_norm_eps=1e-6, qkv_bias=True,
                            attn_implementation="sdpa"), add_pooling_layer=False).eval()
    return {"ours": ours, "timm": peer, "hf": hf}


def measure(settings: Settings) -> list[Row]:
    import torch

    from spcxr_hub.inference.deploy import bf16_is_native, choose_cpu_path, fused_blocks_available, optimize_for_cpu

    from . import runtimes

    torch.set_num_threads(settings.threads)
    scratch = tempfile.TemporaryDirectory(prefix="spcxr-bench-p4-")
    device = settings.device
    cuda = device.startswith("cuda")
    models = build_models(settings)
    batch = torch.randn(settings.batch_size, 1, settings.image_size, settings.image_size)
    for model in models.values():
        model.to(device)
    x = batch.to(device)
    candidates = {
        "ours": lambda: models["ours"](pixel_values=x),
        "timm": lambda: models["timm"](x),
        "hf": lambda: models["hf"](pixel_values=x),
    }
    deploy_mode, deploy = None, {}
    if not cuda and fused_blocks_available():  # exact fp32 with fused oneDNN blocks: information, beside P1
        fused32 = optimize_for_cpu(copy.deepcopy(models["ours"]), batch_size=settings.batch_size, mode="fp32")
        candidates["ours_fp32_fused"] = lambda: fused32(pixel_values=x)
    if cuda:
        ours_bf16 = copy.deepcopy(models["ours"]).to(torch.bfloat16)
        timm_bf16 = copy.deepcopy(models["timm"]).to(torch.bfloat16)
        xb = x.to(torch.bfloat16)
        candidates["ours_bf16"] = lambda: ours_bf16(pixel_values=xb)
        candidates["timm_bf16"] = lambda: timm_bf16(xb)
    else:
        # A separate interleaved group, with its own timm fp32 runs: the bf16/AMX kernels must not sit between the
        # fp32 candidates of P1.
        cpu_path = choose_cpu_path()  # the decision `spcxr predict --fast` makes without a registered export
        deploy_mode = cpu_path.mode
        fast = optimize_for_cpu(copy.deepcopy(models["ours"]), batch_size=settings.batch_size, mode=deploy_mode)
        ours_int8 = optimize_for_cpu(copy.deepcopy(models["ours"]), mode="int8")
        timm_int8 = optimize_for_cpu(copy.deepcopy(models["timm"]), mode="int8")
        deploy = {"timm_fp32": lambda: models["timm"](x), "ours_fp32": lambda: models["ours"](pixel_values=x),
                  "ours_deploy": lambda: fast(pixel_values=x), "ours_int8": lambda: ours_int8(pixel_values=x),
                  "timm_int8": lambda: timm_int8(x)}
        if "ours_fp32_fused" in candidates:
            deploy["ours_fp32_fused"] = candidates["ours_fp32_fused"]
        if deploy_mode != "bf16" and bf16_is_native():  # unreachable today; kept honest if the choice changes
            bf16 = optimize_for_cpu(copy.deepcopy(models["ours"]), batch_size=settings.batch_size, mode="bf16")
            deploy["ours_bf16"] = lambda: bf16(pixel_values=x)
        runtime_runs, runtime_failures = exported_candidates(models["ours"], settings, scratch.name)
        xn = x.numpy()
        for label, run_graph in runtime_runs.items():
            deploy[label] = lambda run_graph=run_graph: run_graph(xn)

    peak = matmul_peak_gflops(settings.threads, device, settings.quick)
    with torch.inference_mode():
        times = interleaved(candidates, warmup=settings.warmup, repeats=settings.repeats + 2, sync=cuda_sync(device))
        if deploy:
            times.update(interleaved(deploy, warmup=settings.warmup, repeats=settings.repeats))
            reference = models["ours"](pixel_values=x).last_hidden_state.float()
            agreement = torch.nn.functional.cosine_similarity(
                fast(pixel_values=x).last_hidden_state.float().flatten(1), reference.flatten(1)).min().item()
    rate = {name: settings.batch_size / median(values) for name, values in times.items()}
    where = "GPU" if cuda else f"{settings.threads} threads"
    shape = f"batch {settings.batch_size}, {settings.image_size}², {where}"
    raw = {"seconds_per_batch": times, "images_per_second": rate, "matmul_peak": peak}
    gmac = VIT_S_GMAC * (1 if not settings.quick else 0)
    rows = [
        Row("P1", f"inference img/s, ViT-S fp32 ({shape})", "SpcxrModel", rate["ours"],
            "timm vit_small_patch16_224 (in_chans=1)", rate["timm"], "img/s", ">= 1.0", details=raw),
        Row("P1", f"inference img/s, ViT-S fp32 ({shape})", "SpcxrModel", rate["ours"],
            "transformers ViTModel (same size, SDPA)", rate["hf"], "img/s", ""),
    ]
    if "ours_fp32_fused" in rate:
        rows.append(Row("P1", f"inference img/s, fp32 ({shape})", "SpcxrModel, deploy.optimize_for_cpu(mode='fp32')",
                        rate["ours_fp32_fused"], "timm vit_small_patch16_224", rate["timm"], "img/s", "",
                        notes="fused oneDNN blocks (bias+GELU, residual adds in the matmuls), fp32 throughout"))
    if gmac:
        achieved = rate["ours"] * 2 * gmac  # GFLOP/s
        rows.append(Row("P1", "fraction of the fp32 matmul peak (ViT-S forward = 4.61 GMAC)", "SpcxrModel GFLOP/s",
                        achieved, "fp32 matmul GFLOP/s", peak["gflops"], "GFLOP/s", "",
                        notes=f"timm: {rate['timm'] * 2 * gmac / peak['gflops']:.2f} of the peak"))
    if cuda:
        rows.append(Row("P1-GPU", f"inference img/s, ViT-S bf16 ({shape})", "SpcxrModel bf16", rate["ours_bf16"],
                        "timm bf16", rate["timm_bf16"], "img/s", ">= 1.0"))
    else:
        label = f"{cpu_path.name}; {cpu_path.reason}"
        unavailable = runtimes.missing()

        def p4(what, key, goal="", **extra):
            return Row("P4", f"{what} img/s ({shape})", what, rate[key], "timm fp32", rate["timm_fp32"], "img/s",
                       goal, **extra)

        rows += [
            Row("P4", f"CPU deployment path img/s ({shape})", f"spcxr deploy ({label})", rate["ours_deploy"],
                "timm vit_small_patch16_224 fp32", rate["timm_fp32"], "img/s", ">= 2.0",
                notes=f"min cosine of last_hidden_state to fp32 on this batch: {agreement:.5f}"
                      + "".join(f"; {name} could not run here ({why[:120]})" for name, why in runtime_failures.items()),
                details={"mode": deploy_mode, "reason": cpu_path.reason, "min_cosine_to_fp32": agreement,
                         "runtimes_not_installed": unavailable, "runtimes_failed": runtime_failures}),
            p4("timm fp32", "timm_fp32"),
            p4("SpcxrModel fp32", "ours_fp32"),
        ]
        if "ours_fp32_fused" in rate:
            rows.append(p4("SpcxrModel fused fp32 oneDNN", "ours_fp32_fused"))
        if "ours_bf16" in rate:
            rows.append(p4("SpcxrModel bf16 + fused oneDNN", "ours_bf16"))
        rows += [p4("SpcxrModel dynamic int8 Linear", "ours_int8"), p4("timm dynamic int8 Linear", "timm_int8")]
        rows += [p4(f"{name} (classifier graph)", name) for name in runtime_runs]
    scratch.cleanup()
    return rows


def exported_candidates(backbone, settings: Settings, workdir: str) -> tuple[dict, dict]:
    """The runtime graphs of a 2-label classifier on `backbone`'s weights and the ones that failed
    (`benchmarks/runtimes.py`)."""
    import numpy as np
    import torch

    from spcxr_hub import SpcxrForImageClassification

    from . import runtimes

    config = copy.deepcopy(backbone.config)
    config.id2label, config.label2id = {0: "normal", 1: "pneumonia"}, {"normal": 0, "pneumonia": 1}
    classifier = SpcxrForImageClassification(config).eval()
    classifier.spcxr.load_state_dict(backbone.state_dict())
    generator = np.random.default_rng(0)
    calibration = [generator.standard_normal((8, 1, settings.image_size, settings.image_size), dtype=np.float32)
                   for _ in range(2 if settings.quick else 4)]
    with torch.inference_mode(False):
        return runtimes.build(classifier, calibration, Path(workdir), settings.threads)
