"""transformers' image-classification pipeline with the input gate in its post-processing.

    from transformers import pipeline
    from spcxr_hub.inference.gated_pipeline import GatedImageClassificationPipeline

    classify = pipeline("image-classification", model="runs/pneumonia", pipeline_class=GatedImageClassificationPipeline)
    classify("film.dcm")  # {"file", "predictions", "positive", "prediction_set", "findings", "ood_score"}

Each answer is what `spcxr predict --json` gives for the image: the scores (top 5), the stored operating point's
`positive` and the conformal `prediction_set` where the model has them, the gate's `findings` (DICOM tags when the
input is a file, pixels always) and the OOD score (from the model folder's `ood_statistics.safetensors`). Inputs are
whatever `spcxr_hub.models.spcxr.imaging.load_image` reads: paths to PNG, 16-bit PNG, JPEG or DICOM files, PIL images,
arrays. `gate="refuse"` withholds the prediction of a flagged image, `gate="off"` returns the plain pipeline's list.
The stock pipeline (and the Hub's widgets) run no project code, so they return scores only.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import ImageClassificationPipeline

from .features import capture_pooled_features
from .input_checks import GATE_MODES, InputChecks
from .predictions import classification_result


class GatedImageClassificationPipeline(ImageClassificationPipeline):
    def _sanitize_parameters(self, top_k=None, function_to_apply=None, timeout=None, gate=None):
        preprocess, forward, postprocess = super()._sanitize_parameters(top_k, function_to_apply, timeout)
        if gate is not None:
            postprocess["gate"] = gate
        return preprocess, forward, postprocess

    def _checks(self, gate: str) -> InputChecks:
        """The gate of this pipeline's model folder, built once per mode (it reads the OOD statistics)."""
        cache = self.__dict__.setdefault("_gate_checks", {})
        if gate not in cache:
            source = str(getattr(self.model, "name_or_path", "") or "")
            cache[gate] = InputChecks(source, gate, self.image_processor.max_pixels)
        return cache[gate]

    def preprocess(self, image, timeout=None):
        from ..models.spcxr.imaging import load_image

        path = Path(image) if isinstance(image, (str, Path)) and Path(image).is_file() else None
        pixels = load_image(str(path) if path else image, max_pixels=self.image_processor.max_pixels)
        model_inputs = self.image_processor(images=pixels, return_tensors="pt").to(self.dtype)
        return {**model_inputs, "spcxr_image": (path, pixels)}

    def _forward(self, model_inputs):
        sources = model_inputs.pop("spcxr_image")  # one (path, pixels), or a list of them when batched
        with capture_pooled_features(self.model) as features:
            outputs = self.model(**model_inputs)
        pooled = torch.from_numpy(features[0]) if features else None
        return {"logits": outputs["logits"], "features": pooled,
                "spcxr_image": [sources] if isinstance(sources, tuple) else sources}

    def postprocess(self, model_outputs, function_to_apply=None, top_k=5, gate="warn"):
        if gate not in GATE_MODES:
            raise ValueError(f"gate={gate!r}: expected one of {', '.join(GATE_MODES)}")
        if gate == "off":
            return super().postprocess(model_outputs, function_to_apply, top_k)
        source = model_outputs["spcxr_image"]
        path, pixels = source[0] if isinstance(source, list) else source  # unbatched items come as the tuple
        features = model_outputs["features"]
        top_k = min(top_k, self.model.config.num_labels)
        result = classification_result(path or "<image>", model_outputs["logits"][0].float(), self.model.config, top_k)
        if path is None:
            del result["file"]
        return self._checks(gate).annotate(result, path, None if features is None else features[0].numpy(),
                                           image=pixels)
