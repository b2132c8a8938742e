"""``facenas arch``: inspect and sample architectures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.tree import Tree

from facenas.cli.common import console, parse_img_size, print_json, space_params, user_errors
from facenas.errors import ArchSpecError, InvalidInput
from facenas.space.hgnet import Arch, HgnetSearchSpace, ParamRange

app = typer.Typer(help="Inspect and sample architectures.", no_args_is_help=True)

ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="Archai search YAML (default: embedded cpu_search.yaml).")
]


def describe(arch: Arch, space: HgnetSearchSpace, img_size: tuple[int, int]) -> dict[str, Any]:
    """Everything ``arch info`` reports, as plain data."""
    spec = arch.spec
    try:
        space.check_in_space(arch)
        in_space, why = True, ""
    except ArchSpecError as err:
        in_space, why = False, str(err)
    hourglasses = []
    for hg in spec.hourglasses:
        chs = hg.channels(spec.base_ch)
        hourglasses.append(
            {
                "channels": chs,
                "downsample_blocks": [{"ops": list(b.ops), "ch_expansion_factor": b.factor} for b in hg.down],
                "skip_blocks": [list(ops) for ops in hg.skip],
                "upsample_blocks": [list(ops) for ops in hg.up],
            }
        )
    return {
        "archid": arch.archid,
        "params": space.num_parameters(arch),
        "macs": space.macs(arch, img_size),
        "img_size": list(img_size),
        "in_search_space": in_space,
        "out_of_space_reason": why,
        "stem_stride": spec.stem_stride,
        "base_ch": spec.base_ch,
        "num_hourglasses": len(spec.hourglasses),
        "num_conv_layers": len(spec.layers(space.params.num_classes, space.params.in_channels)),
        "hourglasses": hourglasses,
        "post_upsample_layers": list(spec.post_upsample),
    }


def _render(info: dict[str, Any]) -> Tree:
    tree = Tree(f"[bold]{info['archid']}[/]")
    tree.add(f"parameters: {info['params']:,}")
    w, h = info["img_size"]
    tree.add(f"MACs at {w}x{h}: {info['macs'] / 1e6:,.1f} M")
    space = "yes" if info["in_search_space"] else f"no ({info['out_of_space_reason']})"
    tree.add(f"in search space: {space}")
    tree.add(f"stem: conv3x3 stride {info['stem_stride']}, {info['base_ch']} channels")
    for i, hg in enumerate(info["hourglasses"]):
        node = tree.add(f"hourglass {i}: channels {hg['channels']}")
        for j, block in enumerate(hg["downsample_blocks"]):
            node.add(f"down {j}: {' '.join(block['ops'])} (x{block['ch_expansion_factor']})")
        for j, ops in enumerate(hg["skip_blocks"]):
            node.add(f"skip {j}: {' '.join(ops) or 'identity'}")
        for j, ops in enumerate(hg["upsample_blocks"]):
            node.add(f"up {j}: {' '.join(ops)}")
    tree.add(f"post-upsample: {' '.join(info['post_upsample_layers']) or 'none'}")
    return tree


@app.command("info")
@user_errors
def info(
    file: Annotated[Path, typer.Argument(help="Archai arch JSON file.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    config: ConfigOpt = None,
    img_size: Annotated[
        str | None, typer.Option(help="Size for MACs: S or WxH (default: the space's).")
    ] = None,
) -> None:
    """Archid, parameters, MACs and structure of an architecture file."""
    space = HgnetSearchSpace(space_params(config))
    arch = space.load(file)
    data = describe(arch, space, parse_img_size(img_size) or space.params.img_size)
    if json_out:
        print_json(data)
    else:
        console.print(_render(data))


@app.command("sample")
@user_errors
def sample(
    out: Annotated[Path, typer.Option("--out", help="Directory for <archid>.json files.")],
    n: Annotated[int, typer.Option("--n", min=1, max=100_000, help="How many architectures.")] = 10,
    seed: Annotated[int, typer.Option(help="RNG seed (Archai's default is 42).")] = 42,
    min_params: Annotated[float, typer.Option(help="Model Size constraint, lower bound.")] = 0,
    max_params: Annotated[float, typer.Option(help="Model Size constraint, upper bound.")] = 5e7,
    config: ConfigOpt = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Sample distinct architectures uniformly from the space (within the parameter range)."""
    if min_params > max_params:
        raise InvalidInput(f"--min-params {min_params:g} exceeds --max-params {max_params:g}")
    space = HgnetSearchSpace(space_params(config), seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    constraint = ParamRange(min_params, max_params)
    seen: dict[str, int] = {}
    for _ in range(n * 50):
        if len(seen) == n:
            break
        arch = space.sample_valid(constraint)
        if arch.archid not in seen:
            space.save(arch, out)
            seen[arch.archid] = space.num_parameters(arch)
    if json_out:
        print_json({"out": str(out), "archs": [{"archid": k, "params": v} for k, v in seen.items()]})
    else:
        for archid, params in seen.items():
            console.print(f"{archid}  {params:>12,} params")
        console.print(f"wrote {len(seen)} architectures to {out}")
