"""User-facing error types: one class per kind of mistake, each message says what to do."""


class DynexportError(Exception):
    """Base class; the CLI prints these without a traceback and exits non-zero."""


class RecipeError(DynexportError):
    """A recipe file or a CLI override is invalid (bad exits, unknown field, wrong type)."""


class AssetError(DynexportError):
    """An offline asset (model, dataset) is missing or malformed."""


class ModelTypeError(DynexportError):
    """The model is not of a supported family."""


class ManifestError(DynexportError):
    """An artifact's manifest is missing, malformed, of an unknown version or points outside the dir."""


class IntegrityError(ManifestError):
    """A file of an artifact is missing or its sha256 differs from the manifest (tampered or corrupt)."""


class GraphError(ManifestError):
    """A graph or tokenizer file of an artifact cannot be loaded or run by its backend (corrupt, or changed
    and re-hashed: the sha256 check passes, the backend refuses it)."""


class InputError(DynexportError, ValueError):
    """Bad runtime input: empty text, wrong type, unsupported backend or policy (a ValueError too, so
    config validation inside pydantic models reports it as a field error)."""


class UsageError(DynexportError):
    """A command-line flag is wrong or does not fit the artifact (the CLI prints one line, exit 2)."""


def brief(e: BaseException, limit: int = 300) -> str:
    """One line of a library's exception for a one-line error: its first non-empty line that is not one of
    OpenVINO's source-location frames ("Exception from src/…", "Check '…' failed at …"), cut to `limit`."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    told = [ln for ln in lines if not ln.startswith(("Exception from src/", "Check '"))] or lines
    return told[0][:limit] if told else type(e).__name__
