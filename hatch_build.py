"""Wheel build hook: pre-parse the YAML catalog into JSON so an installed kvsize starts fast.

For every spec under configs/models and configs/gpus the wheel gets a JSON
twin (`<id>.json`, the same data as the YAML) and one small
`configs/index.json` mapping each kind to its ids and the other names
(aliases and Hugging Face repository id) that resolve to them. An installed
kvsize then looks a name up in the index and reads one JSON file, without
importing PyYAML. A source checkout has no JSON files and reads the YAML.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

INDEX_FORMAT = 1


class CatalogIndexHook(BuildHookInterface):
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel" or version == "editable":
            return
        import yaml

        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        out_dir = Path(tempfile.mkdtemp(prefix="kvsize-index-"))
        configs = Path(self.root) / "configs"
        index: dict[str, object] = {"format": INDEX_FORMAT}
        for kind in ("models", "gpus"):
            entries = {}
            (out_dir / kind).mkdir(parents=True)
            for path in sorted((configs / kind).glob("*.yaml")):
                data = yaml.load(path.read_text(encoding="utf-8"), Loader=loader)
                names = []
                if isinstance(data, dict) and isinstance(data.get("aliases"), list):
                    names.extend(str(alias) for alias in data["aliases"])
                if isinstance(data, dict) and isinstance(data.get("hf_id"), str):
                    names.append(data["hf_id"])  # a Hugging Face repository id is a name too
                entries[path.stem] = names
                twin = out_dir / kind / f"{path.stem}.json"
                twin.write_text(json.dumps(data, sort_keys=True), encoding="utf-8")
                build_data["force_include"][str(twin)] = f"kvsize/configs/{kind}/{path.stem}.json"
            index[kind] = entries
        index_path = out_dir / "index.json"
        index_path.write_text(json.dumps(index, sort_keys=True), encoding="utf-8")
        build_data["force_include"][str(index_path)] = "kvsize/configs/index.json"
