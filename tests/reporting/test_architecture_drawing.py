"""The architecture drawing (Figure 2): made from the registered model, its shapes the summary's."""

import json
import xml.etree.ElementTree as ET

import pytest

from alexnet import models
from alexnet.cli import main
from alexnet.cli.models import describe
from alexnet.models.summary import format_shape
from alexnet.reporting.architecture import architecture_svg

SVG = "{http://www.w3.org/2000/svg}"


def layers(svg: str) -> list[ET.Element]:
    return [g for g in ET.fromstring(svg).iter(f"{SVG}g") if g.get("class") == "layer"]


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_is_drawn_with_the_summarys_shapes(name):
    summary = describe(name)
    drawn = layers(architecture_svg(summary))
    assert [(g.get("data-name"), g.get("data-shape")) for g in drawn] == [
        (r.name, format_shape(r.output_shape)) for r in summary.layers]
    for g, row in zip(drawn, summary.layers, strict=True):
        texts = [t.text for t in g.iter(f"{SVG}text")]
        if g.get("data-towers") == "2":  # each tower's box holds half the maps
            assert texts.count(format_shape((row.output_shape[0] // 2, *row.output_shape[1:]))) == 2
        else:
            assert format_shape(row.output_shape) in texts


def test_the_paper_net_has_figure_2s_towers_and_exchanges():
    drawn = {g.get("data-name"): g for g in layers(architecture_svg(describe("alexnet")))}
    towers = {n: g.get("data-towers") for n, g in drawn.items()}
    exchanges = [n for n, g in drawn.items() if g.get("data-exchange") == "1"]
    assert exchanges == ["conv3", "fc6", "fc7", "fc8"]  # Fig. 2: the GPUs talk at conv3 and in the FC layers
    assert towers["conv1"] == towers["conv2"] == towers["fc7"] == "2" and towers["fc8"] == "1"
    assert len(list(drawn["conv3"].iter(f"{SVG}line"))) == 4  # both towers above into both towers
    one_tower = layers(architecture_svg(models.summarize(models.create("alexnet", towers=1))))
    assert {g.get("data-towers") for g in one_tower} == {"1"} and not any(g.get("data-exchange") == "1" for g in one_tower)


def test_summary_svg_writes_the_file_and_never_overwrites_silently(tmp_path, capsys):
    out = tmp_path / "alexnet.svg"
    assert main(["summary", "alexnet", "--svg", str(out)]) == 0
    assert len(layers(out.read_text())) == len(describe("alexnet").layers)
    assert capsys.readouterr().out.endswith(f"wrote {out}\n")  # it said nothing of the file it wrote
    assert main(["summary", "alexnet", "--svg", str(tmp_path / "j.svg"), "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["model"] == "alexnet" and printed.err == f"wrote {tmp_path / 'j.svg'}\n"  # stdout stays JSON
    out.write_text("MINE")
    assert main(["summary", "alexnet", "--svg", str(out)]) == 2
    assert out.read_text() == "MINE" and "already exists" in capsys.readouterr().err
    assert main(["summary", "alexnet", "--svg", str(tmp_path / "no" / "a.svg")]) == 2
    assert main(["summary", "alexnet", "--svg", str(tmp_path / "a.png")]) == 2
    assert main(["summary", "alexnet", "--svg", str(out), "--force"]) == 0 and out.read_text().startswith("<svg")
