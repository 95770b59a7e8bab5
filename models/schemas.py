"""Pydantic shapes that cross a boundary: API requests/responses and import rows.

Grouped by area with a comment header per area; each area appends its own section.
"""

from __future__ import annotations
