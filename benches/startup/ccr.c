// connect + request + close in a loop, for the daemon's per-connection costs
// (docs/BENCHMARKS.md "Per-connection instructions"). Build: gcc -O2 -o ccr ccr.c
// Run: ccr SOCKET N [persistent] -> mean, p50 and p99 in microseconds; with a third
// argument every ping goes over one connection instead.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
static double now_us(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
static int dial(const char*p){int fd=socket(AF_UNIX,SOCK_STREAM,0);struct sockaddr_un a={0};a.sun_family=AF_UNIX;strncpy(a.sun_path,p,sizeof a.sun_path-1);if(connect(fd,(void*)&a,sizeof a)<0){perror("connect");exit(1);}return fd;}
int main(int argc,char**argv){
 const char*path=argv[1];int n=atoi(argv[2]);int persistent=argc>3;
 double*lat=malloc(sizeof(double)*n);char buf[4096];char line[256];
 int fd=persistent?dial(path):-1;
 for(int i=0;i<n;i++){
  double t0=now_us();
  if(!persistent)fd=dial(path);
  int len=snprintf(line,sizeof line,"{\"protocol_version\":1,\"id\":%d,\"request\":{\"type\":\"daemon_ping\"}}\n",i);
  if(write(fd,line,len)!=len){perror("write");exit(1);}
  int got=0;for(;;){int r=read(fd,buf+got,sizeof buf-got);if(r<=0){perror("read");exit(1);}got+=r;if(memchr(buf,'\n',got))break;}
  if(!persistent)close(fd);
  lat[i]=now_us()-t0;
 }
 double s=0;for(int i=0;i<n;i++)s+=lat[i];qsort(lat,n,sizeof(double),cmp);
 printf("mean %.1f p50 %.1f p99 %.1f us\n",s/n,lat[n/2],lat[(int)(n*0.99)]);
}
