package archive

import (
	"context"
	"fmt"
	"strings"
)

// Limits.MaxWork bounds the path steps one archive may cost to unpack and
// audit: each entry costs the depth of its name for every call made on it
// (os.Root looks each component up again), and each link the components its
// resolution walks. Real bundles (thousands of entries a few levels deep)
// cost well under a million; 100 entries near depth 250 once cost 77s of
// CPU holding the install lock.
//
// The default is workPerEntry path steps per entry MaxEntries allows (3M
// for the default 100,000 entries): about 10s of system time on 2 cores at
// worst. 100 entries near depth 250 cost 340k (1.4s), 1000 of them 2.6M.
const workPerEntry = 30

// Budget counts the work spent on one archive and says when to stop: over
// the budget (bad input), or when the context ends (SIGTERM), checked
// every so many steps so the check costs nothing noticeable. One install
// shares one Budget (Limits.Budget) between its extraction and every audit
// after it, so the install as a whole is bounded, not each pass: two
// passes each just under their own budget once cost twice the time the
// limit promised.
type Budget struct {
	left, max int64
	ctx       context.Context
	tick      int
}

type budget = Budget

// NewBudget is a budget of lim.MaxWork path steps (its default from
// MaxEntries when unset), stopping when lim.Context ends. Not safe for
// concurrent use: one install spends it one step after another.
func NewBudget(lim Limits) *Budget {
	lim = lim.withDefaults()
	ctx := lim.Context
	if ctx == nil {
		ctx = context.Background()
	}
	return &Budget{left: lim.MaxWork, max: lim.MaxWork, ctx: ctx}
}

// newBudget is lim's shared budget, or a fresh one for this pass alone.
func newBudget(lim Limits) *budget {
	if lim.Budget != nil {
		return lim.Budget
	}
	return NewBudget(lim)
}

func (b *budget) spend(n int) error {
	if b == nil {
		return nil
	}
	b.left -= int64(n)
	if b.left < 0 {
		return &Error{Reason: fmt.Sprintf("costs more than %d path steps to unpack and check (names and links too deep for their number; raise --max-entries if the bundle is genuine)", b.max)}
	}
	if b.tick += n; b.tick >= 4096 {
		b.tick = 0
		return b.ctx.Err()
	}
	return nil
}

// stopped reports a context that has ended, for loops that spend nothing.
func (b *budget) stopped() error {
	if b == nil {
		return nil
	}
	return b.ctx.Err()
}

// depth is the number of components of a relative path.
func depth(p string) int { return strings.Count(p, "/") + 1 }
