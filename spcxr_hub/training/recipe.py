"""The fine-tuning recipe, one definition for `spcxr finetune` (`FinetuneOptions`) and `spcxr reproduce`
(`ReproduceOptions`), which passes it unchanged to every run it makes."""

from dataclasses import dataclass, fields


@dataclass(kw_only=True)
class Recipe:
    """How a backbone is fine-tuned, shared by `spcxr finetune` and `spcxr reproduce`; None takes the task's default
    (`Task.defaults`). `config` is the ViT preset or JSON file a `scratch` model is built from."""

    config: str = "vit-s"
    shots: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    layer_decay: float | None = None
    weight_decay: float | None = None
    warmup_epochs: int | None = None
    drop_path_rate: float | None = None
    image_size: int | None = None
    strict: bool = False
    progress: bool = True
    # Subgroup results of the evaluation at the end (spcxr_hub.data.attributes.grouping); they do not change training.
    group_by: str | None = None
    metadata: str | None = None

    def recipe(self) -> dict:
        """The recipe fields alone (a subclass's own fields left out), to pass on or to record."""
        return {f.name: getattr(self, f.name) for f in fields(Recipe)}
