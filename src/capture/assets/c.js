/* touchgate client snippet: adds the context object to conversion form
   submits and sends a beacon per submit. No dependencies, no cookies.
   The context holds the page timing, the Core Web Vitals as observed until
   the submit (LCP; CLS as its largest session window, shifts under 1 s
   apart within 5 s; INP as the slowest interaction, which it is on a page
   with few) and the deepest scroll reached, in % of the page. Its JSON is
   ASCII (ids and numbers; experiments are ids too), so btoa takes it as
   is. Written dense: it must stay under 1 KiB gzipped. */
(function(w,d){
var F=__FORMS__,M=Math,R=M.round,V={},O=[],s=0,c=0,f,l;
function ob(t,g){try{var o=new PerformanceObserver(function(x){x.getEntries().forEach(g)});o.observe({type:t,buffered:!0,durationThreshold:16});O.push([o,g])}catch(e){}}
ob("largest-contentful-paint",function(e){V.lcp=R(e.startTime)});
ob("layout-shift",function(e){if(e.hadRecentInput)return;var t=e.startTime;c=c&&t-l<1e3&&t-f<5e3?c+e.value:(f=t,e.value);l=t;V.cls=M.max(V.cls||0,R(c*1e4)/1e4)});
ob("paint",function(e){if(e.name=="first-contentful-paint")V.fcp=R(e.startTime)});
ob("navigation",function(t){V.ttfb=R(t.responseStart);V.dcl=R(t.domContentLoadedEventEnd);V.load=R(t.loadEventEnd)});
ob("event",function(e){if(e.interactionId)V.inp=M.max(V.inp||0,R(e.duration))});
function sc(){s=M.max(s,M.min(100,R((w.scrollY+w.innerHeight)*100/d.documentElement.scrollHeight)))}
w.addEventListener("scroll",sc);
function ux(){
O.forEach(function(o){o[0].takeRecords().forEach(o[1])});sc();
V.scroll=s;return V}
d.addEventListener("submit",function(e){
var f=e.target,a=new URL(f.action),m,i,r,id,x,c=w.crypto;
if(f.method!="post"||a.origin!=location.origin)return;
for(i=0;i<F.length;i++){r=F[i][0];if(r.slice(-1)=="*"?a.pathname.indexOf(r.slice(0,-1))==0:a.pathname==r){m=F[i][1];break}}
if(!m)return;
id=c&&c.randomUUID?c.randomUUID():M.random().toString(36).slice(2);
x={cid:id,ux:ux()};
if(w.tgExperiments)x.exp=w.tgExperiments;
i=f.elements._tg_ctx||d.createElement("input");
i.type="hidden";i.name="_tg_ctx";
i.value=btoa(JSON.stringify(x)).replace(/[+/=]/g,function(c){return c=="+"?"-":c=="/"?"_":""});
f.appendChild(i);
navigator.sendBeacon("__PREFIX__/b",JSON.stringify({event_name:m,cid:id}))
},!0)
})(window,document);
