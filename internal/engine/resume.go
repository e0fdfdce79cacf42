package engine

import "github.com/swallowkeeper/swallowkeeper/internal/history"

// Resume makes e go on from prev, the engine of the configuration that a
// reload (SIGHUP) replaces: e keeps prev's history and timeline, and the
// changes of its first plan, the first under the new configuration, are
// recorded with cause "hup". Call it after prev's Run has returned and
// before e's Run starts: the history belongs to the goroutine that runs
// Run.
func (e *Engine) Resume(prev *Engine) {
	e.hist, e.timeline = prev.hist, prev.timeline
	e.pubHistory, e.pubTimeline = prev.pubHistory, prev.pubTimeline
	e.histDirty = true
	e.planCause = history.CauseHUP
}
