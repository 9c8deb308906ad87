package ntstatus
import ("testing";"fmt")
func TestQ(t *testing.T){
 for _, s := range []string{"S_OK","S_FALSE","ERROR_INVALID_PARAMETER", "ERROR_ACCESS_DENIED", "ERROR_NOT_ENOUGH_MEMORY", "ERROR_NOACCESS", "ERROR_INVALID_HANDLE", "ERROR_MR_MID_NOT_FOUND"} {
  r, err := Resolve(s)
  if err != nil { fmt.Println("ERR", err); continue }
  fmt.Printf("OK %s n=%d\n", s, len(r.NTStatus))
  for _, v := range r.NTStatus { fmt.Printf("  0x%08X %s\n", v, Name(v)) }
 }
 hist := map[int]int{}
 for _, set := range tables().w32ToNT { hist[len(set)]++ }
 fmt.Println(len(tables().w32ToNT), hist)
 best, bk := 0, uint32(0)
 for k, set := range tables().w32ToNT { if len(set) > best { best, bk = len(set), k } }
 fmt.Println(tables().w32Name[bk], best)
}
