package registry

// Tagged reports whether an instance carries every tag the Rules require;
// Build leaves the others out.
func (r Rules) Tagged(in Instance) bool { return hasAll(in.Tags, r.RequireTags) }
