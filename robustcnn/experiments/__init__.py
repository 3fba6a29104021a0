"""One module per study kind; each turns a resolved config into a run folder of tables, figures and a report."""
