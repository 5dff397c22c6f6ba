"""The README's training example runs (on the CPU, on tiny generated data)."""

from __future__ import annotations

import re
from pathlib import Path

from dataforge.synthetic import make_image_folder

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_training_example_runs(tmp_path: Path, capsys) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    root = make_image_folder(tmp_path / "train", num_images=48, num_classes=3, imbalance=4,
                             sizes=(40, 60), seed=0, progress=False)
    code = (code.replace('"data/train"', repr(str(root))).replace('"cuda"', '"cpu"')
            .replace(".cuda()", "").replace("range(10)", "range(2)").replace("224", "32")
            .replace("batch_size=128", "batch_size=8").replace('num_workers="auto"', "num_workers=0"))
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["0", "1"]
    assert all(0.0 <= float(line.split()[1]) <= 1.0 for line in lines)
