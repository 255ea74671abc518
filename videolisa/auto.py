"""Registration with the transformers Auto classes, without importing transformers at ``import videolisa``.

``videolisa.config`` registers :class:`~videolisa.config.VideoLisaConfig` with ``AutoConfig`` and
``videolisa.modeling.videolisa`` registers :class:`~videolisa.modeling.videolisa.VideoLisaForSegmentation` with
``AutoModel`` when they are imported. So that ``import videolisa`` is enough for::

    import videolisa
    from transformers import AutoModel
    model = AutoModel.from_pretrained("outputs/my-model")   # a VideoLisaForSegmentation

while light commands (``videolisa score``) still never import transformers or torch, ``import videolisa`` installs
an import hook: when transformers' Auto-class modules are first imported, the matching videolisa modules are
imported right after them (``videolisa.modeling.videolisa``, hence torch, only with ``modeling_auto``, which is
there to build models). When they are already imported, the registering modules are imported at once.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

# transformers module -> the videolisa module that registers with what it defines.
REGISTERING_MODULES = {
    "transformers.models.auto.configuration_auto": "videolisa.config",
    "transformers.models.auto.modeling_auto": "videolisa.modeling.videolisa",
}


def _register() -> None:
    """Import the videolisa module that registers with each imported transformers Auto-class module, unless it is
    already imported or being imported (it registers itself at its end then)."""
    for transformers_module, registering in REGISTERING_MODULES.items():
        if transformers_module in sys.modules and registering not in sys.modules:
            importlib.import_module(registering)


class _ThenRegister(importlib.abc.Loader):
    """Loads a transformers or videolisa module with its own loader and, once no such module is still executing,
    registers videolisa's classes. Waiting for the outermost of those imports matters: the registering modules
    import transformers' CLIP and LLM modules and videolisa's own, which fail while one they need
    (``transformers.modeling_layers`` when the first model imported is ``Sam2VideoModel``, ``videolisa.config``
    while it imports transformers) is only partly initialised."""

    executing: set[str] = set()

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str):
        # The wrapped loader's other methods (get_code for ``python -m``, get_source, is_package, resources...).
        return getattr(self.loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.executing.add(module.__name__)
        try:
            self.loader.exec_module(module)
        finally:
            self.executing.discard(module.__name__)
        if not self.executing:
            _register()


class _AutoClassHook(importlib.abc.MetaPathFinder):
    """Finds transformers' and videolisa's modules with the finders after it (so that an editable install's finder,
    or one that hides a module, keeps its say) and wraps their loaders in :class:`_ThenRegister`."""

    def find_spec(self, fullname: str, path=None, target=None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "transformers" and not fullname.startswith(("transformers.", "videolisa.")):
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenRegister(spec.loader)
                return spec
        return None


def install() -> None:
    """Make the Auto classes know videolisa's config and model (see the module docstring). Idempotent."""
    if not any(isinstance(finder, _AutoClassHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AutoClassHook())
    _register()
