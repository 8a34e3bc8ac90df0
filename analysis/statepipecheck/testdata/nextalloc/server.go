package nextalloc

import "github.com/statepipe/statepipe"

// Server starts its pipelines in its constructor: the stage field must be
// set before statepipe.New runs the stages, so right where it is made.
type Server struct {
	p *statepipe.Pipelines[int]
}

func NewServer() (*Server, error) {
	s := &Server{}
	p, err := statepipe.New[int](s)
	if err != nil {
		return nil, err
	}
	s.p = p
	return s, nil
}

func (s *Server) Start(r statepipe.Request[int]) statepipe.Request[int] {
	r.Next = s.Reply // want `s\.Reply allocates a method value`
	return r
}

func (s *Server) Reply(r statepipe.Request[int]) statepipe.Request[int] { return r }

func (s *Server) Close() {}
