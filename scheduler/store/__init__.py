"""The database at the edge: tables, engine and migrations, the facts read in bulk
for the rules, and the facts written by imports and by hand."""
