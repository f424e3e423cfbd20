"""Kept for existing imports: writing whole or not at all lives in `kdistill.files` (a leaf module any wing may import).

Example:
    >>> from kdistill import files
    >>> from kdistill.export import atomic
    >>> atomic.staging_folder is files.staging_folder
    True
"""

from kdistill.files import (InsufficientSpaceError, check_free_space, check_output_path, process_alive, remove_stale_staging, replace,
                            staging_folder)

__all__ = ["staging_folder", "replace", "remove_stale_staging", "process_alive", "check_output_path", "check_free_space", "InsufficientSpaceError"]
