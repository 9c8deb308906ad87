// Package fakes holds hand-written, in-memory stand-ins for the services the
// controller's API handlers call (see the interfaces in controller/api). Each
// fake keeps just enough state to answer like the real service, records the
// calls it receives, and returns an error a test sets, so a handler's
// validation, error mapping and conversion are tested without a controller.
package fakes
