package console

import "net/http"

func (s *Server) flamePage(w http.ResponseWriter, r *http.Request) {}
func (s *Server) flameSVG(w http.ResponseWriter, r *http.Request)  {}
