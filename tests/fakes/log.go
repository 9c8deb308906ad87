package fakes

import (
	"slices"
	"sync"
)

// Log records what a fake was given, in order; safe for concurrent use.
// The zero value is empty and ready.
type Log[T any] struct {
	mu    sync.Mutex
	items []T
}

func (l *Log[T]) add(x T) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.items = append(l.items, x)
}

// All returns a copy of what was recorded, oldest first.
func (l *Log[T]) All() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.items)
}

func (l *Log[T]) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.items)
}
