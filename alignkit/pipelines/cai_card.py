"""The model card of a Constitutional AI run's final model: the RL stage's card told as the whole run."""

from __future__ import annotations

from pathlib import Path

from alignkit.models import EMBEDDED
from alignkit.pipelines.cai_records import STAGE_TEXT
from alignkit.train.card import add_sections
from alignkit.utils.secrets import redact


def cai_card(pipeline, rl_card: str) -> str:
    """The RL stage's model card, told as the whole run: every stage with who wrote its data, the constitution,
    and the held-out evaluation."""
    stages = ["## Constitutional AI", "",
              f"Aligned from `{pipeline.cfg.model}` by `alignkit cai`: SL-CAI (SFT on the model's own revisions) "
              f"then RL-CAI ({pipeline.cfg.rl.method} against AI feedback). The stages, and who wrote what each one "
              "trained on or produced:", "", "| stage | what it did | written by |", "|---|---|---|"]
    for name, finished in pipeline.runner.finished.items():
        origin = getattr(finished.record, "origin", "")
        stages.append(f"| {name} | {STAGE_TEXT.get(name, '')} | {origin} |")
    principles = pipeline.constitution.principles
    constitution = ["## Constitution", "",
                    f"`{Path(pipeline.constitution.path).name}`, {len(principles)} principles (critique request "
                    "of each):", ""]
    constitution += [f"- **{p.id}** ({p.kind}): {' '.join(p.critique.split())}" for p in principles]
    sections = ["\n".join(stages), "\n".join(constitution)]
    evaluation = pipeline.runner.record("eval")
    if evaluation is not None and evaluation.metrics:
        names = list(evaluation.metrics)
        keys = list(dict.fromkeys(k for m in evaluation.metrics.values() for k in m))
        rows = ["## Held-out evaluation", "", f"The evaluation suite's held-out split, greedy; `{names[-1]}` is "
                "this model.", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for key in keys:
            values = [evaluation.metrics[n].get(key) for n in names]
            if all(v is None for v in values):
                continue  # not measured in this run
            rows.append(f"| {key} | " + " | ".join("" if v is None else f"{v:.3f}" if isinstance(v, float)
                                                   else str(v) for v in values) + " |")
        sections.append("\n".join(rows))
    import yaml


    config = yaml.safe_dump(redact(pipeline.cfg.model_dump(mode="json")), sort_keys=False).strip()
    sections.append(f"## The cai config\n\nThe whole run's settings (the RL stage's own are under Reproduce):"
                    f"\n\n```yaml\n{config}\n```")
    base = EMBEDDED[pipeline.cfg.model].hub_id if pipeline.cfg.model in EMBEDDED else None
    return add_sections(rl_card, sections, title=pipeline.out.name,
                        front={"tags": ["alignkit", "constitutional-ai", "rlaif", pipeline.cfg.rl.method],
                               **({"base_model": base} if base else {})})
