"""P4's metric: what the CPU deployment path changes in a fine-tuned classifier's results.

A classifier of ViT-S's width and depth (384 wide, 12 blocks, 6 heads; at 64² input so that it trains in a minute
on a CPU) is trained from scratch to tell pneumonia phantoms from normal ones (`spcxr_hub.data.synthetic`), saved, loaded
the way `spcxr predict` loads it (the lean loader), and evaluated on held-out phantoms twice: fp32, and through
`spcxr_hub.inference.deploy.optimize_for_cpu` (what `spcxr predict --fast` runs), then through every int8 path: torch's
dynamic int8 Linear layers and the static int8 runtime exports (onnxruntime, OpenVINO/NNCF where installed; ranges
calibrated on 128 training phantoms, as `spcxr export --int8` does). Reported: accuracy and AUROC of each, the change
in points, top-1 agreement, the largest probability difference and (deploy path) the logits' cosine. These are numbers about phantoms, not patients; the point
is the difference between the two paths on one trained model.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .common import Row, Settings


def phantoms(seeds, size: int):
    import numpy as np
    import torch

    from spcxr_hub import SpcxrImageProcessor

    from spcxr_hub.data import synthetic

    processor = SpcxrImageProcessor(size={"height": size, "width": size})
    labels = np.array([seed % 2 for seed in seeds])  # odd seeds have pneumonia
    images = [synthetic.generate(int(s), 128, ("pneumonia",) if label else ()).image for s, label in zip(seeds, labels)]
    return processor(images)["pixel_values"], torch.from_numpy(labels)


def measure(settings: Settings) -> list[Row]:
    import torch
    from sklearn.metrics import roc_auc_score

    from spcxr_hub import SpcxrConfig, SpcxrForImageClassification, SpcxrImageProcessor
    from spcxr_hub.inference.deploy import choose_cpu_path, load_lean_classifier, optimize_for_cpu
    from spcxr_hub.hub.saving import save_model_directory

    torch.set_num_threads(settings.threads)
    if settings.quick:
        sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                     reconstruction_layers=[1, 2], segmentation_skip_layers=[1, 1, 2])
        image, n_train, n_test, epochs, lr = 32, 32, 32, 1, 1e-3
    else:
        sizes = dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536)
        image, n_train, n_test, epochs, lr = 64, 384, 512, 8, 3e-4
    train_x, train_y = phantoms(range(n_train), image)
    test_x, test_y = phantoms(range(100_000, 100_000 + n_test), image)
    torch.manual_seed(0)
    config = SpcxrConfig(**sizes, image_size=image, id2label={0: "normal", 1: "pneumonia"})
    model = SpcxrForImageClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * ((n_train + 31) // 32)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(n_train).split(32):
            model(train_x[batch], labels=train_y[batch]).loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad()
            schedule.step()
    model.eval()

    def evaluate(net):
        with torch.inference_mode():
            return torch.cat([net(pixel_values=chunk).float() for chunk in test_x.split(64)])

    from . import runtimes

    with tempfile.TemporaryDirectory(prefix="spcxr-bench-p4-") as folder:
        save_model_directory(Path(folder) / "model", model, SpcxrImageProcessor(size={"height": image, "width": image}))
        fp32 = load_lean_classifier(Path(folder) / "model")
        deployed = optimize_for_cpu(load_lean_classifier(Path(folder) / "model"))
        torch_int8 = optimize_for_cpu(load_lean_classifier(Path(folder) / "model"), mode="int8")
        # Static int8 ranges from training images (as `spcxr export --int8 --calibration-data` takes them).
        calibration = [chunk.numpy() for chunk in train_x[:128].split(16)]
        graphs, _ = runtimes.build(model, calibration, Path(folder), settings.threads)  # failures: in P4's speed rows
        reference, fast = evaluate(fp32), evaluate(deployed)
        others = {"torch dynamic int8 Linear": evaluate(torch_int8)}
        for label, run in graphs.items():
            if "int8" in label:
                others[label] = torch.cat([torch.from_numpy(run(chunk.numpy())["logits"]) for chunk in test_x.split(64)])

    def metrics(logits):
        accuracy = (logits.argmax(-1) == test_y).float().mean().item()
        auroc = roc_auc_score(test_y.numpy(), logits.softmax(-1)[:, 1].numpy())
        return 100 * accuracy, 100 * auroc

    def compared(logits):
        agreement = (reference.argmax(-1) == logits.argmax(-1)).float().mean().item()
        prob_difference = (reference.softmax(-1) - logits.softmax(-1)).abs().max().item()
        return agreement, prob_difference

    (acc32, auc32), (acc_fast, auc_fast) = metrics(reference), metrics(fast)
    agreement, _ = compared(fast)
    cosine = torch.nn.functional.cosine_similarity(reference, fast).min().item()
    mode = choose_cpu_path().name  # what optimize_for_cpu's "auto" chose above
    what = (f"{sizes['num_hidden_layers']}-block, {sizes['hidden_size']}-wide classifier trained {epochs} epochs on "
            f"{n_train} phantoms, {n_test} held out, {image}²")
    details = {"accuracy_fp32": acc32, "accuracy_deploy": acc_fast, "auroc_fp32": auc32, "auroc_deploy": auc_fast,
               "top1_agreement": agreement, "min_logit_cosine": cosine, "mode": mode, "setup": what}
    rows = [
        Row("P4", f"deploy path accuracy (%), {what}", f"deploy ({mode})", acc_fast, "fp32", acc32, "%",
            "drop ≤ 0.5 points", met=acc32 - acc_fast <= 0.5,
            notes=f"change {acc_fast - acc32:+.2f} points; top-1 agreement {100 * agreement:.1f}%; "
                  f"min logit cosine {cosine:.5f}", details=details),
        Row("P4", "deploy path AUROC (%), same model and set", f"deploy ({mode})", auc_fast, "fp32", auc32, "%",
            "drop ≤ 0.5 points", met=auc32 - auc_fast <= 0.5, notes=f"change {auc_fast - auc32:+.2f} points"),
    ]
    for label, logits in others.items():  # the int8 paths: the goal, ≤ 0.5 points lost
        accuracy, auroc = metrics(logits)
        same, prob = compared(logits)
        rows.append(Row(
            "P4", f"{label} accuracy (%), same model and set", label, accuracy, "fp32", acc32, "%",
            "drop ≤ 0.5 points", met=acc32 - accuracy <= 0.5 and auc32 - auroc <= 0.5,
            notes=(f"change {accuracy - acc32:+.2f} points, AUROC {auroc - auc32:+.2f}; top-1 agreement "
                   f"{100 * same:.1f}%; max Δ probability {prob:.4f}"),
            details={"accuracy": accuracy, "auroc": auroc, "top1_agreement": same, "max_prob_difference": prob}))
    return rows
