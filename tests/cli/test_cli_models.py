import json

from alexnet.cli import main


def test_models_table(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "60,965,224" in out and "61,100,840" in out and "46,764,746" in out  # d2l at its 10 classes
    assert "alexnet_small" in out
    rows = out.splitlines()
    assert len({row.index(row.split()[1]) + len(row.split()[1]) for row in rows[1:]}) == 1  # the input column's right edge
    lenet = next(row for row in rows if row.startswith("lenet "))  # its 416,520 MACs read "0.000" in GMACs
    assert " 0.417 M " in lenet and " 0.724 G " in next(row for row in rows if row.startswith("alexnet "))


def test_summary_json(capsys):
    assert main(["summary", "alexnet", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"model", "input_size", "layers", "total_params", "total_macs", "training_macs"}
    assert data["input_size"] == 227 and data["total_params"] == 60_965_224
    assert data["layers"][0] == {"name": "conv1", "output_shape": [96, 55, 55], "params": 34_944, "macs": 105_415_200,
                              "groups": 1}
    assert sum(l["macs"] for l in data["layers"]) == data["total_macs"]


def test_summary_table_walks_through_the_paper(capsys):
    assert main(["summary", "alexnet", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    for shape in ["55×55×96", "27×27×96", "27×27×256", "13×13×256", "13×13×384", "6×6×256"]:
        assert shape in out
    assert "training: 4.11 GFLOP per image" in out  # 10 classes: fc8 is 4096×10


def test_bad_input_is_one_line_error(capsys):
    assert main(["summary", "alexnet", "--input-size", "224"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alexnet: error:") and "\n" not in err and "227" in err
    assert main(["summary", "nope"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
