"""The application's routes, one router per area: files (and inspect), jobs, library, home."""
