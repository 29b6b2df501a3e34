"""The practitioner's messages: the sandboxed templates, what they may read, the
self-care tips, the daily digest, and the checks (`tayori lint`) run before a patient
could meet a mistake."""
