"""Print the markdown table of the reference's Python names vs this package's.

    python crates/python/tools/api_table.py REF_CHECKOUT

Reference names are read off its pybind11 sources (``.def("name"`` of the store
and transfer-engine classes, module-level ``m.def`` / class names of the store
module); ours are ``dir()`` of the installed package. Names present on both
sides are summarised by count; the table lists only the differences.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path


def defs(text: str) -> set:
    return set(re.findall(r'\.def(?:_static)?\(\s*"([A-Za-z_][A-Za-z0-9_]*)"', text))


def main(ref: str) -> int:
    root = Path(ref)
    store_src = (root / "mooncake-integration/store/store_py.cpp").read_text()
    te_src = (root / "mooncake-integration/transfer_engine/transfer_engine_py.cpp").read_text()
    # The store class is the one that defines setup/put: take the defs after its class_ line.
    start = store_src.find('"MooncakeDistributedStore"')
    store_ref = {n for n in defs(store_src[start:]) if not n.startswith("__")}
    store_ref -= {"alloc", "free", "real_register", "real_unregister_by_endpoint"}  # other classes
    store_ref -= set(re.findall(r'\bm\.def\(\s*"(\w+)"', store_src))  # module-level functions
    te_ref = {n for n in defs(te_src) if not n.startswith("__")}
    te_ref &= set(re.findall(r'\.def\(\s*"([a-z_0-9]+)"\s*,\s*&TransferEnginePy::', te_src))

    from mooncake.engine import TransferEngine
    from mooncake.store import MooncakeDistributedStore

    ours_store = {n for n in dir(MooncakeDistributedStore) if not n.startswith("_")}
    ours_te = {n for n in dir(TransferEngine) if not n.startswith("_")}
    print("| class | reference names | ours too | missing here | extra here |")
    print("|---|---|---|---|---|")
    for cls, ref_names, ours in (
        ("MooncakeDistributedStore", store_ref, ours_store),
        ("TransferEngine", te_ref, ours_te),
    ):
        missing = sorted(ref_names - ours)
        extra = sorted(ours - ref_names)
        print(
            f"| {cls} | {len(ref_names)} | {len(ref_names & ours)} | "
            f"{', '.join(f'`{m}`' for m in missing) or '-'} | {', '.join(f'`{e}`' for e in extra) or '-'} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
