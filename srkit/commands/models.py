"""``srkit models``: the registered presets, their size and what each one is for."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from typing import Any

from srkit.errors import ConfigError

EXAMPLES = textwrap.dedent(
    """\
    examples:
      srkit models                      # every preset: family, parameters, scale, frames, shipped
                                        # weights (WEIGHTS "shipped": usable with no download), purpose
      srkit models --family edvr        # only the EDVR presets
      srkit models --family edvr --details
                                        # plus every config field (the overrides a preset accepts)

    Parameter counts are computed by building each network on PyTorch's "meta" device: no weights
    are allocated, so the listing is instant even for large models.
    """
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLES
    parser.add_argument("--family", metavar="F", help="only presets of this family (e.g. edvr, udvd, mana)")
    parser.add_argument("--details", action="store_true",
                        help="also print each preset's spec and config fields (name = value  # meaning)")


def _describe(name: str) -> dict[str, Any]:
    """Build ``name`` on the meta device; its parameter count, spec and config (None on failure)."""
    import torch

    from srkit.models import create_model

    try:
        with torch.device("meta"):
            model = create_model(name)
    except Exception as exc:  # noqa: BLE001 - one broken preset must not hide the others
        return {"error": f"{type(exc).__name__}: {exc}"}
    info: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters())}
    spec = getattr(model, "spec", None)
    info["spec"] = spec
    info["config"] = getattr(model, "config", None)
    return info


def _fmt_params(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def run(args: argparse.Namespace) -> int:
    from srkit.models import list_models, model_entry

    names = list_models(args.family)
    if not names:
        families = sorted({model_entry(n).family for n in list_models()})
        raise ConfigError(f"no models of family {args.family!r} (families: {', '.join(families)})")
    rows = []
    for name in names:
        entry = model_entry(name)
        info = _describe(name)
        spec = info.get("spec")
        rows.append((
            name,
            entry.family,
            _fmt_params(info["params"]) if "params" in info else "?",
            f"x{spec.scale}" if spec is not None else "?",
            str(spec.num_frames) if spec is not None else "?",
            "shipped" if entry.pretrained else "-",
            entry.description,
            info,
        ))
    header = ("NAME", "FAMILY", "PARAMS", "SCALE", "FRAMES", "WEIGHTS", "DESCRIPTION")
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(6)]
    print("  ".join(h.ljust(w) for h, w in zip(header[:6], widths)) + "  " + header[6])
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row[:6], widths)) + "  " + row[6])
        info = row[7]
        if "error" in info:
            print(f"    (could not be built: {info['error']})")
        if args.details and "error" not in info:
            spec = info["spec"]
            if spec is not None:
                extra = ", HR input" if spec.hr_input else ""
                cond = f", condition {spec.condition}" if spec.condition else ""
                print(f"    input {spec.input_kind}, {spec.num_frames} frame(s), restores frame {spec.center_index}, "
                      f"pads to a multiple of {spec.pad_multiple}{extra}{cond}")
            config = info["config"]
            if config is not None and dataclasses.is_dataclass(config):
                for f in dataclasses.fields(config):
                    help_text = f.metadata.get("help", "")
                    value = getattr(config, f.name)
                    print(f"    {f.name} = {value!r}" + (f"  # {help_text}" if help_text else ""))
            print()
    return 0
