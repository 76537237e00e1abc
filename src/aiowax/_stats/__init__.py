"""Stats of a run: the public model (`model`) and how it is read (`collect`)."""
