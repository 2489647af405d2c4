"""README and docs/: the generated parameter table is current, every local link resolves."""

import re
from pathlib import Path
from typing import List, Set, Tuple

import pytest

TABLE_BEGIN = '<!-- parameters: begin (python -m l3rocc_ros.params --markdown) -->'
TABLE_END = '<!-- parameters: end -->'
# Markdown links and images: [text](target) / ![alt](target); the target ends at ')' or a space.
LINK = re.compile(r'\]\(([^)\s]+)\)')
FENCE = re.compile(r'^```.*?^```', re.MULTILINE | re.DOTALL)


def _documents(repo_root: Path) -> List[Path]:
    """Return the README and every Markdown page under docs/."""
    return [repo_root / 'README.md', *sorted((repo_root / 'docs').glob('*.md'))]


def _anchor(heading: str) -> str:
    """Return GitHub's anchor of a heading: lower case, punctuation dropped, '-' for ' '."""
    text = heading.strip().lower().replace('`', '')
    return re.sub(r'[^\w\- ]', '', text).replace(' ', '-')


def _anchors(path: Path) -> Set[str]:
    """Return the anchors of every heading of a Markdown file (code blocks left out)."""
    text = FENCE.sub('', path.read_text())
    return {_anchor(m.group(1)) for m in re.finditer(r'^#+\s+(.*)$', text, re.MULTILINE)}


def _local_links(path: Path) -> List[Tuple[str, Path, str]]:
    """Return (link, target file, anchor) for every link of ``path`` that is not a URL."""
    links = []
    for target in LINK.findall(FENCE.sub('', path.read_text())):
        if re.match(r'[a-z]+:', target):
            continue
        file_part, _, anchor = target.partition('#')
        resolved = (path.parent / file_part).resolve() if file_part else path
        links.append((target, resolved, anchor))
    return links


def test_readme_parameter_table_is_current(repo_root: Path) -> None:
    pytest.importorskip('rcl_interfaces')
    from l3rocc_ros.params import parameter_table

    readme = (repo_root / 'README.md').read_text()
    assert readme.count(TABLE_BEGIN) == 1 and readme.count(TABLE_END) == 1
    table = readme.split(TABLE_BEGIN)[1].split(TABLE_END)[0].strip('\n') + '\n'
    assert table == parameter_table(), (
        'README parameter table is stale: paste the output of '
        '`python -m l3rocc_ros.params --markdown` between its markers')


def test_local_links_resolve(repo_root: Path) -> None:
    broken = []
    for document in _documents(repo_root):
        for target, resolved, anchor in _local_links(document):
            if not resolved.exists():
                broken.append(f'{document.name}: {target} (no such file)')
            elif anchor and resolved.suffix == '.md' and anchor not in _anchors(resolved):
                broken.append(f'{document.name}: {target} (no such heading)')
    assert not broken, 'broken links:\n' + '\n'.join(broken)


def test_anchor_rule() -> None:
    assert _anchor('Soak (`l3rocc bench --soak`)') == 'soak-l3rocc-bench---soak'
    assert _anchor('`torch.compile` (`network_compile`)') == 'torchcompile-network_compile'
